// Starting the -p program for a connection: the argv to run, the UCSPI
// environment that tells it who connected, and the ways to wire it up (the
// connection itself as stdio, pipes for the splice bridge, or Bun's pipes
// for the copy loop), each through startProcess.
import type { Address } from "../net/address.ts";
import type { ServeOptions } from "../options.ts";
import { close, pipe, setPipeSize } from "../system/fd.ts";
import { localEndpoint, peerCredentials, remoteEndpoint } from "../system/socket.ts";
import { verbose, warn } from "../system/log.ts";
import type { Program } from "./command.ts";
import { Inherited, startProcess, type Environment, type PipedProcess, type Process } from "./process.ts";

export { directProgram, programFor, programNameProblem, shellNeed, type Program } from "./command.ts";

/** The engine a program is started for: see process.ts. */
export type Engine = "blocking" | "evented";

/** Every variable connectionVariables and prestartVars may set: a program never gets an inherited one. */
const UCSPI_NAMES = new Set(["PROTO", "TCPLOCALIP", "TCPLOCALPORT", "TCPREMOTEIP", "TCPREMOTEPORT", "UNIXLOCALPATH", "UNIXREMOTEPID", "UNIXREMOTEUID", "UNIXREMOTEGID"]);
let inherited: Inherited | undefined;

/**
 * socket's own environment, read once (at the first connection, after main
 * has removed its private markers): walking process.env per connection
 * was a large share of a worker's CPU.
 */
function inheritedEnv(): Inherited {
  inherited ??= new Inherited(
    Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined && !UCSPI_NAMES.has(e[0]))),
  );
  return inherited;
}

/** A program's environment: socket's own and the UCSPI variables (values only: nothing a peer controls is ever part of the command). */
function environment(vars: Record<string, string>): Environment {
  return { inherited: inheritedEnv(), own: Object.entries(vars) };
}

/**
 * --prestart: the program starts before its connection exists, so it gets
 * PROTO and the local address (the one listened on) but no remote address.
 */
export function prestartVars(address: Address): Record<string, string> {
  return address.kind === "inet"
    ? { PROTO: "TCP", TCPLOCALIP: address.ip, TCPLOCALPORT: String(address.port) }
    : { PROTO: "UNIX", UNIXLOCALPATH: address.path };
}

/** The UCSPI variables of one connection. */
export function connectionVariables(fd: number, address: Address): Record<string, string> {
  const env: Record<string, string> = {};
  if (address.kind === "inet") {
    env.PROTO = "TCP";
    // Listening on one IPv4 address (a literal in its one spelling) and a known port, the local
    // end is that: no getsockname per connection. IPv6 literals have many spellings: asked.
    const wildcard = address.family !== 4 || address.ip === "0.0.0.0" || address.port === 0;
    try {
      if (wildcard) {
        const local = localEndpoint(fd);
        if (local.family === "inet") [env.TCPLOCALIP, env.TCPLOCALPORT] = [local.ip, String(local.port)];
      }
      const remote = remoteEndpoint(fd);
      if (!wildcard) [env.TCPLOCALIP, env.TCPLOCALPORT] = [address.ip, String(address.port)];
      if (remote.family === "inet") [env.TCPREMOTEIP, env.TCPREMOTEPORT] = [remote.ip, String(remote.port)];
    } catch {
      // the peer is already gone; the program will see EOF
    }
  } else {
    env.PROTO = "UNIX";
    env.UNIXLOCALPATH = address.path;
    try {
      const peer = peerCredentials(fd);
      [env.UNIXREMOTEPID, env.UNIXREMOTEUID, env.UNIXREMOTEGID] = [peer.pid, peer.uid, peer.gid].map(String);
    } catch {
      // peer gone
    }
  }
  return env;
}

/**
 * The program with the connection itself as stdin, stdout and stderr: no
 * copying. `ownGroup`: it leads a session and group of its own, which
 * --request-timeout ends whole (what it left in the background holds the connection).
 */
export function startOnConnection(program: Program, fd: number, vars: Record<string, string>, engine: Engine, ownGroup = false): Process {
  const spec = { argv: program.argv, argv0: program.argv0, env: environment(vars), stdio: [fd, fd, fd] as const, ownGroup };
  return engine === "blocking" ? startProcess(spec, "blocking") : startProcess(spec, "evented");
}

/**
 * The bridge's pipes hold 256 KiB, not 64: fewer splice calls and wakeups
 * per megabyte, and larger ones gained nothing more (docs/DESIGN.md). Not more: an
 * unprivileged user's pipes share 64 MiB (pipe-user-pages-soft).
 */
const PIPE_BYTES = 256 << 10;

/**
 * The program on real pipes (splice needs a pipe on one side; Bun's own
 * "pipe" stdio is a socket pair): `stdin` is a descriptor for the
 * program's stdin, or the write end of a new pipe when -1; its stdout and
 * stderr are one new pipe, whose read end is returned. Our ends are
 * close-on-exec, so no later program inherits them. Only in a pool worker
 * (the splice bridge's callers): a blocking program.
 * `vars`: the UCSPI variables (the environment is the inherited one and these).
 */
export function startOnPipes(program: Program, vars: Record<string, string>, stdin: number): { proc: Process; input: number; output: number } {
  const [output, programOutput] = pipe();
  setPipeSize(output, PIPE_BYTES);
  let input = -1;
  let programInput = stdin;
  try {
    if (stdin < 0) {
      [programInput, input] = pipe();
      setPipeSize(input, PIPE_BYTES);
    }
    const stdio = [programInput, programOutput, programOutput] as const;
    const proc = startProcess({ argv: program.argv, argv0: program.argv0, env: environment(vars), stdio, ownGroup: false }, "blocking");
    return { proc, input, output };
  } catch (e) {
    close(output);
    if (input >= 0) close(input);
    throw e;
  } finally {
    // The program has its copies; ours would keep its output from ever ending.
    close(programOutput);
    if (stdin < 0 && programInput >= 0) close(programInput);
  }
}

/**
 * After its connection closed, a program runs to its end (a CGI may still
 * write its log), bounded only by --timeout when given.
 */
export async function programEnd(proc: Process, timeoutMs: number | undefined, log: (line: string) => void): Promise<void> {
  // A blocking program's wait runs no timer meanwhile: the wait itself is bounded.
  if (await proc.wait(timeoutMs)) return;
  log(`program ${proc.pid} killed: still running --timeout after its connection closed`);
  proc.kill("SIGKILL");
  await proc.wait();
}

/** For the copy loop: pipes on the sides that are copied, /dev/null on the others; `ownGroup` as startOnConnection's. */
export function startWithPipes(program: Program, vars: Record<string, string>, sides: { input: boolean; output: boolean }, ownGroup = false): PipedProcess {
  const out = sides.output ? "pipe" : "ignore";
  const stdio = [sides.input ? "pipe" : "ignore", out, out] as const;
  return startProcess({ argv: program.argv, argv0: program.argv0, env: environment(vars), stdio, ownGroup }, "evented");
}

/**
 * The operator's line when a program cannot be started at all (always
 * printed, rate-limited); `options.failed` is told too (ServeOptions).
 */
export function cannotStart(program: Program, e: unknown, options: Pick<ServeOptions, "failed">): void {
  options.failed?.();
  warn(`start ${program.command}`, `-p '${program.command}': cannot start: ${e instanceof Error ? e.message : String(e)}`);
}

/**
 * What became of a program: -v's end line (tcpserver's, with the
 * duration: `end PID status N (D ms)` or `end PID signal NAME (D ms)`), and
 * on socket's own stderr always, exits 126 and 127: the shell's "cannot
 * execute" and "not found", which otherwise only the client would see
 * (and `options.failed` is told of them).
 */
export function outcome(
  proc: Pick<Process, "pid" | "exited" | "signalCode">,
  program: Program,
  options: Pick<ServeOptions, "verbose" | "failed">,
  started = performance.now(),
): Promise<number> {
  return proc.exited.then((code) => {
    const ms = Math.round(performance.now() - started);
    verbose(options, `end ${proc.pid} ${proc.signalCode ? `signal ${proc.signalCode}` : `status ${code}`} (${ms} ms)`);
    if (code === 126 || code === 127) {
      options.failed?.();
      const why = code === 127 ? "command not found" : "command not executable";
      warn(`exit ${code} ${program.command}`, `-p '${program.command}': exit ${code} (${why})`);
    }
    return code;
  });
}
