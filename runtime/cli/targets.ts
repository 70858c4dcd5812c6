// retnetc targets: every target of the registry (runtime/targets.ts) and whether it can be used
// on this machine, one line each:
//   native  available (gcc 12.2.0, 2 cores)
//   cuda    unavailable: no CUDA driver: libcuda.so.1 not found; prints CUDA (.cu; ...)
// --json writes the same as JSON. The exit code is 0 whatever is unavailable.
import { flag, parseOptions, UsageError } from './options.js';
import { targetReports } from '../targets.js';

export const TARGETS_USAGE = 'usage: retnetc targets [--json]';

export async function cmdTargets(args: string[]): Promise<number> {
  const o = parseOptions('targets', args, { json: { type: 'boolean' } });
  if (o.positionals.length) throw new UsageError(`unexpected argument '${o.positionals[0]}' (${TARGETS_USAGE})`);
  const reports = await targetReports();
  if (flag(o, 'json')) {
    process.stdout.write(JSON.stringify(reports.map(({ line: _, ...r }) => r), null, 2) + '\n');
    return 0;
  }
  const w = Math.max(...reports.map((r) => r.name.length));
  for (const r of reports) process.stdout.write(`${r.name.padEnd(w)}  ${r.line}\n`);
  return 0;
}
