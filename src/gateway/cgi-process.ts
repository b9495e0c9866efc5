// Starting a request's CGI and ending it, for every gateway engine: each
// CGI leads a session and process group of its own, and what cannot be
// executed is said on socket's stderr while the web server gets a 502.
import type { Engine, Program } from "../connection/program.ts";
import { Inherited, startProcess, type PipedProcess, type Process, type Stdio } from "../connection/process.ts";
import type { GatewayOptions } from "../options.ts";
import { say } from "../system/log.ts";
import { KILL_AFTER_MS } from "../system/reaper.ts";
import { BAD_GATEWAY, prepareCgi, requestText, type CgiEnvironment, type CgiSource, type Launch, type Variable } from "../request/cgi.ts";

/**
 * A request's running CGI; under the evented engine with the ends of its
 * "pipe" descriptors; `name`: what ran (its stderr lines say it);
 * `command`, `request`: what --request-timeout's line names; `overdue`:
 * whom to tell when it is ended for that (a pool worker's --status).
 */
export type Cgi = PipedProcess & { readonly name: string; readonly command: string; readonly request: string; readonly overdue?: () => void };

/** What a CGI runs: a Launch that is not an answer. */
export type Run = Exclude<Launch, { answer: Uint8Array }>;

/**
 * The request's program, its stdin a pipe (the body streams in) or the
 * spooled body's file ("ignore": no body), its stdout and stderr `output`
 * or new pipes (evented); or the answer when it cannot or must not run.
 * "blocking": the caller waits for it itself (a pool worker), and gives
 * its own pipes (`stdin` not "pipe", `output` given).
 */
export function startProgram(
  source: CgiSource,
  variables: Variable[],
  options: GatewayOptions,
  stdin: "pipe" | "ignore" | number,
  output: { stdout: number; stderr: number } | undefined,
  engine: Engine = "evented",
): Cgi | { answer: Uint8Array } {
  const launch = prepareCgi(source, variables, options, "fastcgi");
  if ("answer" in launch) return launch;
  const proc = spawnCgi(launch, [stdin, output?.stdout ?? "pipe", output?.stderr ?? "pipe"], engine);
  return proc ?? { answer: BAD_GATEWAY };
}

/**
 * The program and its process group are told to stop (TERM), then killed
 * KILL_AFTER_MS later: the group even when the program itself has gone by
 * then, as what it started may ignore TERM.
 */
export function endProgram(proc: Process): void {
  proc.stop(KILL_AFTER_MS);
}

/** EOF on the program's stdin (if it is not there already): a pipe of Bun's; a spooled body's file is not. */
export function endInput(proc: Cgi): void {
  if (typeof proc.stdin !== "object") return;
  try {
    const ended = proc.stdin.end();
    if (ended instanceof Promise) ended.catch(() => {});
  } catch {
    // already ended, or the program has gone
  }
}

/** The rule's inherited variables as a program's environment, made once per rule. */
const inherited = new WeakMap<CgiEnvironment["inherited"], Inherited>();

function inheritedOf(env: CgiEnvironment): Inherited {
  let made = inherited.get(env.inherited);
  if (!made) inherited.set(env.inherited, (made = new Inherited(env.inherited)));
  return made;
}

/**
 * Starts the program; when it cannot be executed (ENOENT, EACCES, ...)
 * says so on socket's own stderr, always (the operator must see it even
 * without -v), and returns undefined. "blocking" takes no "pipe" in
 * `stdio`: the caller makes its own.
 *
 * Each CGI leads a session and process group of its own (setsid), and its
 * kill() signals that whole group: what it started in the background
 * (`cmd &`) ends with it when an abort, a timeout or a drain ends the
 * request, rather than running on holding its output. A CGI that exits
 * normally leaves its background processes alone. Its environment's bytes
 * that are not UTF-8 reach it as they came.
 */
export function spawnCgi(run: Run, stdio: readonly [Stdio, Stdio, Stdio], engine: Engine): Cgi | undefined {
  const { program, cwd, env } = run;
  const spec = { argv: program.argv, argv0: program.argv0, cwd, env: { inherited: inheritedOf(env), own: env.own }, ownGroup: true };
  const [input, output, errors] = stdio;
  if (engine === "blocking" && (input === "pipe" || output === "pipe" || errors === "pipe")) throw new TypeError("a blocking CGI gets no pipe of ours");
  try {
    const proc =
      engine === "blocking" && input !== "pipe" && output !== "pipe" && errors !== "pipe"
        ? startProcess({ ...spec, stdio: [input, output, errors] }, "blocking")
        : startProcess({ ...spec, stdio }, "evented");
    return Object.assign(proc, { name: program.argv[0], command: program.command, request: requestText(env), overdue: run.overdue });
  } catch (e) {
    cannotRun(program, e, run.failed);
    return undefined;
  }
}

/** A CGI's pid, what it runs (its path, or -p's command), its request's method and URI, and whom to tell when it is overdue. */
export function describeCgi(proc: Cgi): { pid: number; script: string; request: string; counted?: () => void } {
  return { pid: proc.pid, script: proc.command, request: proc.request, counted: proc.overdue };
}

/** `failed`: told of it too (Launch: a pool worker's --status counts it). */
function cannotRun(program: Program, e: unknown, failed: (() => void) | undefined): void {
  const code = e instanceof Error && "code" in e && typeof e.code === "string" ? e.code : undefined;
  failed?.();
  say(`cannot run ${program.argv[0]}: ${describeSpawnError(code ?? (e instanceof Error ? e.message : String(e)))}`);
}

function describeSpawnError(code: string): string {
  switch (code) {
    case "ENOENT":
      return "no such file or directory, or its interpreter (#!) is missing (ENOENT)";
    case "EACCES":
      return "permission denied: not an executable file (EACCES)";
    default:
      return code;
  }
}
