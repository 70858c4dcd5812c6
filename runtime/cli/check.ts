// retnetc check: checks a file and prints every function signature and, for each model size,
// its hyper parameters, weight count and parameter count.
import type { CheckedModel } from '../../dsl/checked.js';
import { loadChecked, signature } from './common.js';
import { parseOptions, UsageError } from './options.js';

export const CHECK_USAGE = 'usage: retnetc check FILE.ret';

function modelSummary(m: CheckedModel): string {
  const params = m.weights.reduce((a, w) => a + w.shape.reduce((x, y) => x * y, 1), 0);
  const hypers = [...m.hypers].map(([k, v]) => `${k}=${v}`).join(' ');
  return `  size ${m.config}: ${hypers}\n    ${m.weights.length} weights, ${params.toLocaleString('en-US')} parameters; forward: ${signature(m.forward).replace(/^fn /, '')}`;
}

export function cmdCheck(args: string[]): number {
  const { positionals } = parseOptions('check', args, {});
  if (positionals.length !== 1) throw new UsageError(CHECK_USAGE);
  const program = loadChecked(positionals[0]!);
  if (!program) return 1;
  const checked = program.checked!;
  for (const fn of checked.fns.values()) process.stdout.write(signature(fn) + '\n');
  for (const info of checked.models.values()) {
    process.stdout.write(`model ${info.decl.name} (sizes: ${info.configs.join(', ')})\n`);
    for (const c of info.configs) process.stdout.write(modelSummary(info.instances.get(c)!) + '\n');
  }
  return 0;
}
