// The executable's entry: it reads which of socket's programs this start
// is before loading any of them. scripts/build.ts compiles this file with
// main.ts (the command line) and worker-main.ts (a pool worker) as entry
// points of their own, each bundled apart, and the one chosen here is
// loaded by its path inside the executable: a start reads and evaluates
// only its own program's code, not the whole of socket. `-version` loads
// nothing more (docs/DESIGN.md, "The start").
//
// This module keeps to constants and what it needs to choose: anything
// with state here would be a second copy of what the program's bundle has.
import { WORKER_ENV, WORKER_FLAG } from "./pool/protocol.ts";
import { errorText } from "./fatal.ts";
import { output } from "./system/output.ts";
import { asksVersion, NAME, VERSION_LINE } from "./version.ts";

/** The programs' files beside this one, as the compiled executable holds them (bun resolves .js to .ts from the sources). */
const COMMAND_LINE = "./main.js";
const WORKER = "./worker-main.js";

/** Which program this start runs: its module's path, or undefined when `-version` was all it had to do. */
function program(argv: readonly string[]): string | undefined {
  if (asksVersion(argv)) return undefined;
  // The master starts its workers so (pool/worker-process.ts); without a configuration it is a usage error, the command line's.
  return argv[0] === WORKER_FLAG && process.env[WORKER_ENV] !== undefined ? WORKER : COMMAND_LINE;
}

const path = program(Bun.argv.slice(2));
if (path === undefined) {
  void output(VERSION_LINE).then(() => process.exit(0));
} else {
  // A path held in a variable: the bundler leaves the import to run time, not inlining the program here.
  // Its failure is a broken build's: said on stderr as the programs say a bug (system/failure.ts), without loading log.ts's node:fs.
  import(path).catch((e: unknown) => output(`${NAME}: internal error: ${path} could not be loaded: ${errorText(e)}\n`, Bun.stderr).then(() => process.exit(70)));
}
