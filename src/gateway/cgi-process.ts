// Starting a request's CGI and ending it, for every gateway engine: each
// CGI leads a process group of its own, and what cannot be executed is said
// on socket's stderr while the web server gets a 502.
import type { Subprocess } from "bun";
import { programFailed, type Program } from "../connection/program.ts";
import type { GatewayOptions } from "../options.ts";
import { say } from "../system/log.ts";
import { KILL_AFTER_MS, spawn } from "../system/reaper.ts";
import { BAD_GATEWAY, prepareCgi, type CgiSource } from "../request/cgi.ts";
import type { Variable } from "../request/variables.ts";

/**
 * The request's program, its stdin a pipe (the body streams in) or the
 * spooled body's file ("ignore": no body); or the answer when it cannot
 * or must not run.
 */
export function startProgram(
  source: CgiSource,
  variables: Variable[],
  options: GatewayOptions,
  stdin: "pipe" | "ignore" | number,
  output: { stdout: number; stderr: number } | undefined,
) {
  const launch = prepareCgi(source, variables, options, "fastcgi");
  if ("answer" in launch) return launch;
  const { program, cwd, env } = launch;
  const stdout = output?.stdout ?? "pipe";
  const stderr = output?.stderr ?? "pipe";
  const proc = spawnCgi(program, (group) => spawn(program.argv, { ...group, argv0: program.argv0, cwd, stdio: [stdin, stdout, stderr], env }));
  return proc ?? { answer: BAD_GATEWAY };
}

export type Cgi = Exclude<ReturnType<typeof startProgram>, { answer: Uint8Array }>;

/**
 * The program and its process group are told to stop (TERM), then killed
 * KILL_AFTER_MS later: the group even when the program itself has gone by
 * then, as what it started may ignore TERM.
 */
export function endProgram(proc: Cgi): void {
  proc.kill("SIGTERM");
  setTimeout(() => proc.kill("SIGKILL"), KILL_AFTER_MS).unref();
}

/** What every CGI is started with: its own process group (see spawnCgi). */
const OWN_GROUP = { detached: true } as const;

/**
 * Starts the program (`start` spreads `group` into Bun.spawn's options);
 * when it cannot be executed (ENOENT, EACCES, ...) says so on socket's own
 * stderr, always (the operator must see it even without -v), and returns
 * undefined.
 *
 * Each CGI leads a process group of its own (setsid: Bun.spawn's
 * `detached`), and its kill() signals that whole group: what it started in
 * the background (`cmd &`) ends with it when an abort, a timeout or a
 * drain ends the request, rather than running on holding its output. A
 * CGI that exits normally leaves its background processes alone.
 */
export function spawnCgi<T extends Subprocess>(program: Program, start: (group: typeof OWN_GROUP) => T): T | undefined {
  let proc: T;
  try {
    proc = start(OWN_GROUP);
  } catch (e) {
    const error = e as Error & { code?: string };
    const reason = error.code ? `${error.code}` : error.message;
    programFailed();
    say(`cannot run ${program.argv[0]}: ${describeSpawnError(reason)}`);
    return undefined;
  }
  const own = proc.kill.bind(proc);
  const kill = (signal?: NodeJS.Signals | number) => {
    try {
      process.kill(-proc.pid, signal ?? "SIGTERM");
    } catch {
      own(signal); // the group has gone (or never formed): the leader alone, as Bun knows it
    }
  };
  Object.defineProperty(proc, "kill", { value: kill });
  return proc;
}

/** Whether a process of a CGI's group (see spawnCgi) still runs: what it left in the background. */
export function groupLives(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
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
