#!/usr/bin/env node
// The retnetc command line. User mistakes end in one located line and exit code 1.
import { main } from './commands.js';

// A reader that goes away (`retnetc check x.ret | head`) is not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    // Only internal bugs get here; still one line, plus where to look.
    process.stderr.write(`retnetc: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
    if (process.env.RETNETC_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    process.exitCode = 70;
  },
);
