// retnetc's commands: check, run, compile, logits, targets (one file each) and the dispatcher. Each returns an
// exit code; user errors are printed as `location: error: message` and never as a stack
// trace. A new command adds its file, an entry in COMMANDS and its lines in USAGE.
import * as fs from 'node:fs';
import { cmdCheck } from './check.js';
import { cmdCompile } from './compile.js';
import { cmdDemo } from './demo.js';
import { cmdExport } from './export.js';
import { cmdGenerate } from './generate.js';
import { cmdLogits } from './logits.js';
import { didYouMean, fail, UsageError } from './options.js';
import { cmdRun, RUN_TARGETS } from './run.js';
import { cmdTargets } from './targets.js';
import { cmdTrain } from './train.js';
import { EXEC_TARGETS, PRINT_TARGETS, TARGETS } from '../targets.js';

export { UsageError } from './options.js';
export { signature } from './common.js';

// The target lists come from the registry (runtime/targets.ts).
const limitsText = TARGETS.filter((t) => t.print).map((t) => `${t.print!.limits.join('|')} for ${t.name}`).join(', ');

const USAGE = `usage: retnetc <command> [options]

commands:
  demo [--out DIR] [--steps N] [--target T] [--prompt TEXT] [--tokens N] [--seed S] [--fresh]
                                      train the tiny RetNet on Moby Dick on the fastest target here
                                      (a few minutes on 2 CPU cores), then generate from a prompt;
                                      says the device, steps, validation loss, tokens/s and where the
                                      checkpoint (default ./retnetc-demo) and loss plot are; run again
                                      to continue an interrupted demo, --fresh to start over
  check FILE.ret                      check a file; print every function and model signature
  run FILE.ret --fn NAME --inputs IN.safetensors --out OUT.safetensors
      [--target ${RUN_TARGETS.join('|')}] [--schedule parallel|recurrent|chunkwise] [--chunk N]
      [--dtype f32|f16|bf16] [--grad DOUT.safetensors] [--out-dtype f32|f64|...]
      [--size H=2 ...] [--repeat N]
                                      run a function on named inputs; write outputs by name and,
                                      with --grad, the gradient of every input as grad.NAME;
                                      --size binds sizes no input binds (fn msr[H]); --repeat
                                      times N more runs of the compiled plan
  run FILE.ret --model NAME --checkpoint CK.safetensors --out OUT.safetensors [--size NAME]
      [--inputs TOKENS.safetensors] [--target ...] [--schedule ...] [--chunk N] [--repeat N]
                                      run a model's forward with a torchscale checkpoint's weights
                                      (its config sets the hypers; --size a named size when it has
                                      none) on its tokens or those of --inputs; writes the outputs
  compile FILE.ret --fn NAME --schedule parallel|recurrent|chunkwise [--chunk N] [--backward]
      [--stateful] [--dtype f32|f16|bf16] [--target ${PRINT_TARGETS.join('|')}] [--emit ir|kernel-ir|ts|state]
      [--limits L] --out DIR [--size K=64 ...]
  compile MODEL.ret [--model NAME] [--size tiny|base|...] --schedule ... [--backward|--stateful]
      [--target ${PRINT_TARGETS.join('|')}] [--emit ir|kernel-ir|ts|state] --out DIR
      (--schedule-file FILE.json instead of --schedule/--chunk/--dtype: per-statement choices,
      as --emit ir writes them)
                                      write a stage of the compilation readably, or the kernels
                                      for a target with a manifest (and, --emit ts, typed bindings);
                                      kernels are checked against the target's guaranteed limits
                                      (--limits ${limitsText},
                                      or a FILE.json of limits)
  logits --checkpoint CK.safetensors|DIR --mode parallel|chunkwise|recurrent [--chunk N]
      [--target ${EXEC_TARGETS.join('|')}] [--tokens TOKENS.safetensors] --out OUT.safetensors
                                      a torchscale RetNet checkpoint's logits f32[B, T, vocab] on its
                                      tokens (or those of --tokens): parallel and chunkwise run the
                                      forward, recurrent the stateful form one token at a time
  train [--size NAME] [--data FILE] [--steps N] [--batch B] [--seq T] [--lr X] [--warmup N]
      [--schedule parallel|recurrent|chunkwise] [--chunk N] [--target ${EXEC_TARGETS.join('|')}] [--seed S]
      [--eval-every N] [--save-every N] [--accum N] --out DIR [--resume DIR]
                                      train retnet (default --size tiny, byte tokens) on Moby Dick or
                                      the UTF-8 text of --data (last 5% held out for validation);
                                      writes DIR/metrics.jsonl and checkpoints (model.safetensors in
                                      torchscale's format, optimizer and trainer state) every
                                      --save-every steps, at the end and on SIGINT/SIGTERM; --resume
                                      continues a checkpoint as if never interrupted
  generate --checkpoint PATH --prompt TEXT [--tokens N] [--temperature X] [--top-k K] [--top-p P]
      [--seed S] [--mode parallel|chunkwise|recurrent] [--chunk N] [--target ${EXEC_TARGETS.join('|')}]
      (--prompt-tokens ID,ID,... instead of --prompt for a checkpoint whose tokens are not bytes)
                                      continue a prompt with a checkpoint (a retnetc train directory or
                                      a .safetensors file): --mode prefills it (default chunkwise;
                                      recurrent: token by token), then tokens are decoded one at a time
                                      (default 200, temperature 0.8; 0 is greedy) and stream to stdout;
                                      prefill and decode tokens/s go to stderr
  export --checkpoint PATH --out FILE.safetensors
                                      a checkpoint's weights as one torchscale-format file (f32,
                                      torchscale's names, the config in the metadata), for logits
  targets [--json]                    every target: whether it runs here (and if not, why in one
                                      line), and what it prints for compile --target
  help                                this text
  --version                           the version of retnetc`;

const COMMANDS: Record<string, (args: string[]) => number | Promise<number>> = { demo: cmdDemo, check: cmdCheck, run: cmdRun, compile: cmdCompile, logits: cmdLogits, train: cmdTrain, generate: cmdGenerate, export: cmdExport, targets: cmdTargets };

/** The version in package.json (found from the built dist/ or from the sources). */
export function version(): string {
  for (const rel of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(fs.readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'retnetc' && pkg.version) return pkg.version;
    } catch { /* try the next */ }
  }
  return 'unknown';
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined) {
      process.stderr.write(USAGE + '\n');
      return 1;
    }
    if (cmd === 'help' || cmd === '--help' || cmd === '-h') {
      process.stdout.write(USAGE + '\n');
      return 0;
    }
    if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
      process.stdout.write(`retnetc ${version()}\n`);
      return 0;
    }
    const run = COMMANDS[cmd];
    if (!run) {
      const names = [...Object.keys(COMMANDS), 'help'];
      const hint = cmd.startsWith('-') ? didYouMean(cmd.replace(/^-+/, ''), ['help', 'version'], '--') : didYouMean(cmd, names);
      return fail('retnetc', `unknown command '${cmd}'${hint}\n${USAGE}`);
    }
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(USAGE + '\n');
      return 0;
    }
    return await run(rest);
  } catch (e) {
    if (e instanceof UsageError) return fail('retnetc', e.message);
    throw e;
  }
}
