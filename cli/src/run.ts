/**
 * Executable entry of the CLI (`node --import tsx cli/src/run.ts …` in a
 * checkout; the `bin` shim calls `main` of the compiled CLI). No top-level
 * await and no `import.meta`, so this file also compiles to CommonJS.
 */
import {main} from './main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);
