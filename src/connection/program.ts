// Starting the -p program for a connection: the argv to run, the UCSPI
// environment that tells it who connected, and the two ways to wire it up
// (the connection itself as stdio, or pipes for the copy loop).
import type { Subprocess } from "bun";
import type { Address } from "../net/address.ts";
import { close, localEndpoint, peerCredentials, pipe, remoteEndpoint, setPipeSize, StringTable } from "../system/libc.ts";
import { Child, childrenSpawnable, spawnArgs, type SpawnArgs } from "./child.ts";
import { spawn } from "../system/reaper.ts";
import { verbose, warn } from "../system/log.ts";

// dash keywords and builtins: a command starting with one needs the shell.
const SHELL_WORDS = new Set(
  ("! { } case do done elif else esac fi for if in then until while " +
    ". : [ alias bg break cd command continue echo eval exec exit export false fc fg getopts " +
    "hash jobs kill local printf pwd read readonly return set shift test times trap true type " +
    "ulimit umask unalias unset wait").split(" "),
);
// Characters with no meaning to sh: no quotes, $, globs, ~, redirections, separators.
const PLAIN_WORD = /^[A-Za-z0-9_@%+=:,./-]+$/;

export interface Program {
  argv: string[];
  /** argv[0] as the operator wrote it, as sh would pass it. */
  argv0: string;
  /** The -p command as written, for the operator's messages. */
  command: string;
}

/**
 * `sh -c command`, or the command's own words when the shell would do
 * nothing but split them: dash does not exec the last command, so that
 * saves a process per connection. A command not found on
 * PATH goes through sh, which prints the error a user expects.
 */
export function programFor(command: string): Program {
  const words = command.trim().split(/[ \t]+/);
  const plain = words.every((w) => PLAIN_WORD.test(w)) && !words[0].includes("=") && !SHELL_WORDS.has(words[0]);
  const path = plain ? Bun.which(words[0]) : null;
  if (path) return { argv: [path, ...words.slice(1)], argv0: words[0], command };
  return { argv: ["/bin/sh", "-c", command], argv0: "sh", command };
}

/**
 * The UCSPI variables (tcpserver's and ucspi-unix's names). Values only:
 * nothing a peer controls is ever part of the command.
 */
let inherited: Record<string, string> | undefined;

function inheritedEnv(): Record<string, string> {
  // socket's own environment, read once (at the first connection, after
  // main has removed its private markers): walking process.env per
  // connection was a measurable part of a worker's CPU (docs/DESIGN.md).
  inherited ??= Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined));
  return { ...inherited };
}

/**
 * --prestart: the program starts before its connection exists, so it gets
 * PROTO and the local address (the one listened on) but no remote address.
 */
export function prestartEnv(address: Address): Record<string, string> {
  return Object.assign(inheritedEnv(), prestartVars(address));
}

/** prestartEnv's own variables, without the inherited environment (for startChild). */
export function prestartVars(address: Address): Record<string, string> {
  return address.kind === "inet"
    ? { PROTO: "TCP", TCPLOCALIP: address.ip, TCPLOCALPORT: String(address.port) }
    : { PROTO: "UNIX", UNIXLOCALPATH: address.path };
}

export function connectionEnv(fd: number, address: Address): Record<string, string> {
  return Object.assign(inheritedEnv(), connectionVariables(fd, address));
}

/** The UCSPI variables of one connection (not the inherited environment; startChild takes these). */
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

/** Every variable connectionVariables and prestartEnv may set: a program never gets an inherited one. */
const UCSPI_NAMES = new Set(["PROTO", "TCPLOCALIP", "TCPLOCALPORT", "TCPREMOTEIP", "TCPREMOTEPORT", "UNIXLOCALPATH", "UNIXREMOTEPID", "UNIXREMOTEUID", "UNIXREMOTEGID"]);
let inheritedStrings: StringTable | undefined;

/** socket's environment as C strings, made once, with room for a connection's UCSPI variables. */
function inheritedTable(): StringTable {
  inheritedStrings ??= new StringTable(
    Object.entries(inheritedEnv()).filter(([name]) => !UCSPI_NAMES.has(name)).map(([name, value]) => `${name}=${value}`),
    UCSPI_NAMES.size,
  );
  return inheritedStrings;
}

const spawnArgsOf = new WeakMap<Program, SpawnArgs>();

/**
 * A pool worker's program on these descriptors, through posix_spawn and
 * waited for by the worker's own poll (child.ts); undefined where this libc
 * cannot (the caller uses Bun.spawn). `vars`: the UCSPI variables.
 */
export function startChild(program: Program, vars: Record<string, string>, stdio: readonly [number, number, number]): Child | undefined {
  if (!childrenSpawnable()) return undefined;
  let args = spawnArgsOf.get(program);
  if (!args) spawnArgsOf.set(program, (args = spawnArgs(program.argv, program.argv0)));
  return Child.start(args, inheritedTable(), Object.entries(vars).map(([name, value]) => `${name}=${value}`), stdio);
}

/** The program gets the connection itself as stdin, stdout and stderr: no copying. */
export function startOnConnection(program: Program, fd: number, env: Record<string, string>): Subprocess {
  return spawn(program.argv, { argv0: program.argv0, stdio: [fd, fd, fd], env });
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
 * (the splice bridge's callers): the program is a Child where it can be.
 * `vars`: the UCSPI variables (the environment is the inherited one and these).
 */
export function startOnPipes(
  program: Program,
  vars: Record<string, string>,
  stdin: number,
): { proc: Child | Subprocess; input: number; output: number } {
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
    const proc = startChild(program, vars, stdio) ??
      spawn(program.argv, { argv0: program.argv0, stdio: [...stdio], env: Object.assign(inheritedEnv(), vars) });
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
export async function programEnd(
  proc: { pid: number; exited: Promise<unknown>; kill(signal?: number | NodeJS.Signals): void },
  timeoutMs: number | undefined,
  log: (line: string) => void,
): Promise<void> {
  if (timeoutMs === undefined) return void (await proc.exited);
  const killed = () => log(`program ${proc.pid} killed: still running --timeout after its connection closed`);
  if (proc instanceof Child) {
    // Its wait blocks the thread, so no timer would fire meanwhile: the wait itself is bounded.
    if (await proc.wait(timeoutMs)) return;
    killed();
    proc.kill("SIGKILL");
    return void (await proc.wait());
  }
  const timer = setTimeout(() => {
    killed();
    proc.kill("SIGKILL");
  }, timeoutMs);
  await proc.exited;
  clearTimeout(timer);
}

export type PipedProgram = Subprocess<"pipe" | "ignore", "pipe" | "ignore", "pipe" | "ignore">;

/** For the copy loop: pipes on the sides that are copied, /dev/null on the others. */
export function startWithPipes(
  program: Program,
  env: Record<string, string>,
  sides: { input: boolean; output: boolean },
): PipedProgram {
  const out = sides.output ? "pipe" : "ignore";
  return spawn(program.argv, {
    argv0: program.argv0,
    stdio: [sides.input ? "pipe" : "ignore", out, out],
    env,
  });
}

/**
 * Linux's PATH_MAX, its NUL included: execve refuses a longer file name
 * (ENAMETOOLONG), and Bun.which throws on one ("bin path is too long"),
 * which ended every pool worker at start.
 */
const PATH_MAX = 4096;

/**
 * Why the -p command can never start, or undefined: its program's name
 * (a first word the shell would not change, as programFor runs it) is
 * longer than a file name can be. Socket's own arguments bound the rest:
 * the kernel passed the whole command as one (MAX_ARG_STRLEN), so sh -c or
 * the program's own argv can take it too.
 */
export function programNameProblem(command: string): string | undefined {
  const name = command.trim().split(/[ \t]+/)[0];
  if (!PLAIN_WORD.test(name) || name.includes("=") || SHELL_WORDS.has(name)) return undefined; // the shell makes the name
  if (name.length < PATH_MAX) return undefined; // PLAIN_WORD is ASCII: characters are bytes
  return `-p: the program's name is ${name.length} bytes long; a file name is at most ${PATH_MAX - 1} (PATH_MAX)`;
}

/** Why `command` needs a shell (--scgi/--fastcgi refuse it), or undefined when its words can be run as they are. */
export function shellNeed(command: string): string | undefined {
  const words = command.trim().split(/[ \t]+/);
  const odd = words.find((w) => !PLAIN_WORD.test(w));
  if (odd !== undefined) return `'${odd}' has characters the shell would interpret`;
  if (words[0].includes("=")) return "it starts with a variable assignment";
  if (SHELL_WORDS.has(words[0])) return `'${words[0]}' is a shell keyword or builtin`;
  return undefined;
}

/**
 * The command's words, executed directly whether or not the program can be
 * found now: a missing one fails at spawn (ENOENT) and the caller reports
 * it, rather than sh printing "not found" into a protocol stream.
 */
export function directProgram(command: string): Program {
  const words = command.trim().split(/[ \t]+/);
  return { argv: [Bun.which(words[0]) ?? words[0], ...words.slice(1)], argv0: words[0], command };
}

let failureHook: () => void = () => {};

/**
 * Told of each program that could not start or exited 126/127 (a pool
 * worker counts them for --status); set once, by the runner.
 */
export function onProgramFailure(hook: () => void): void {
  failureHook = hook;
}

/** Called by whoever starts programs (here and in gateway/) for each failure. */
export function programFailed(): void {
  failureHook();
}

/** The operator's line when a program cannot be started at all (always printed, rate-limited). */
export function cannotStart(program: Program, e: unknown): void {
  failureHook();
  warn(`start ${program.command}`, `-p '${program.command}': cannot start: ${(e as Error).message}`);
}

/**
 * What became of a program: -v's end line (tcpserver's, with the
 * duration: `end PID status N (D ms)` or `end PID signal NAME (D ms)`), and
 * on socket's own stderr always, exits 126 and 127: the shell's "cannot
 * execute" and "not found", which otherwise only the client would see.
 */
export function outcome(
  proc: { pid: number; exited: Promise<number>; readonly signalCode: string | number | null },
  program: Program,
  options: { verbose: boolean },
  started = performance.now(),
): Promise<number> {
  return proc.exited.then((code) => {
    const ms = Math.round(performance.now() - started);
    verbose(options, `end ${proc.pid} ${proc.signalCode ? `signal ${proc.signalCode}` : `status ${code}`} (${ms} ms)`);
    if (code === 126 || code === 127) {
      failureHook();
      const why = code === 127 ? "command not found" : "command not executable";
      warn(`exit ${code} ${program.command}`, `-p '${program.command}': exit ${code} (${why})`);
    }
    return code;
  });
}
