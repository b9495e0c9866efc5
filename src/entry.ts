// The executable's entry: it reads which of socket's programs this start
// is (the command line, main.ts; a pool worker, worker-main.ts) before
// evaluating any of them. Each dynamic import here, and the ones further
// in (the parser, the master, a worker's gateways, --help), is evaluated
// only when that import runs: a start pays for its own program's modules,
// and `-version` evaluates nothing more than this module's few imports
// (docs/DESIGN.md, "The start").
import { WORKER_ENV, WORKER_FLAG } from "./pool/protocol.ts";
import { errorText } from "./fatal.ts";
import { output } from "./system/output.ts";
import { asksVersion, NAME, VERSION_LINE } from "./version.ts";

/** The program this start runs, loaded on demand; undefined when `-version` was all it had to do. */
function program(argv: readonly string[]): (() => Promise<unknown>) | undefined {
  if (asksVersion(argv)) return undefined;
  // The master starts its workers so (pool/worker-process.ts); without a configuration it is a usage error, the command line's.
  if (argv[0] === WORKER_FLAG && process.env[WORKER_ENV] !== undefined) return () => import("./worker-main.ts");
  return () => import("./main.ts");
}

const load = program(Bun.argv.slice(2));
if (load === undefined) {
  void output(VERSION_LINE).then(() => process.exit(0));
} else {
  // Failing here is a broken build's doing: said as the programs say a bug (system/failure.ts), without log.ts's node:fs.
  load().catch((e: unknown) => output(`${NAME}: internal error: ${errorText(e)}\n`, Bun.stderr).then(() => process.exit(70)));
}
