// The executable's entry: it reads which of socket's programs this start
// is (the command line, main.ts; a pool worker, worker-main.ts) before
// loading any of them. Each program is a bundle of its own in the
// executable (scripts/build.ts), imported by its name there, so a start
// reads only this small module and its own program's bundle: `-version`
// nothing more, a worker none of the command line's, the master's or the
// client's code (docs/DESIGN.md, "The start").
import { WORKER_ENV, WORKER_FLAG } from "./pool/protocol.ts";
import { errorText } from "./fatal.ts";
import { output } from "./system/output.ts";
import { asksVersion, NAME, VERSION_LINE } from "./version.ts";

/**
 * Each program's bundle beside this one in the executable. Run from the
 * source tree (bun src/entry.ts), the modules themselves.
 */
const PROGRAMS = import.meta.path.endsWith(".ts")
  ? { main: "./main.ts", worker: "./worker-main.ts" }
  : { main: "./main.js", worker: "./worker-main.js" };

/** The program this start runs, loaded on demand; undefined when `-version` was all it had to do. */
function program(argv: readonly string[]): (() => Promise<unknown>) | undefined {
  if (asksVersion(argv)) return undefined;
  // The master starts its workers so (pool/worker-process.ts); without a configuration it is a usage error, the command line's.
  if (argv[0] === WORKER_FLAG && process.env[WORKER_ENV] !== undefined) return () => import(PROGRAMS.worker);
  return () => import(PROGRAMS.main);
}

const load = program(Bun.argv.slice(2));
if (load === undefined) {
  void output(VERSION_LINE).then(() => process.exit(0));
} else {
  // Failing here is a broken build's doing: said as the programs say a bug (system/failure.ts), without log.ts's node:fs.
  load().catch((e: unknown) => output(`${NAME}: internal error: ${errorText(e)}\n`, Bun.stderr).then(() => process.exit(70)));
}
