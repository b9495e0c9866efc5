// Serving one accepted connection, the same way whoever accepted it (the
// classic server, a pool worker): hand it to the program, or run the copy
// loop between it and the program's pipes or socket's own stdin/stdout;
// in a pool worker, -q splices the program's output instead of copying it.
import type { Socket, Subprocess } from "bun";
import type { Address } from "../net/address.ts";
import type { Options } from "../cli.ts";
import { Copy, copyHandlers, type Bytes, type LocalSide, type Sink } from "./copy.ts";
import { close, setBlocking } from "../system/libc.ts";
import { bridge } from "./splice.ts";
import { connectionEnv, startOnConnection, startOnPipes, startWithPipes, type PipedProgram, type Program } from "./program.ts";
import { watchIdle } from "./watchdog.ts";
import { verbose, warn } from "../system/log.ts";
import { serveGatewayDescriptor, serveGatewaySocket } from "../gateway/gateway.ts";

/**
 * What serving a connection needs to know, a subset of Options a worker is
 * given too. A gateway (--scgi/--fastcgi) also needs the -p command itself
 * (it never goes through sh), the pool's size (FastCGI's GET_VALUES) and
 * --pass-env.
 */
export type ServeOptions = Pick<Options, "crlf" | "quit" | "readOnly" | "writeOnly" | "verbose" | "timeoutMs"> &
  Partial<Pick<Options, "gateway" | "program" | "pool" | "passEnv">>;

export const log = verbose;

/** socket(1)'s -v line for an accepted connection. */
export function connectionMessage(address: Address, peerIp: () => string): string {
  return address.kind === "unix" ? `unix: connection from ${address.path}` : `inet: connection from ${peerIp()}`;
}

/**
 * The copy loop is needed when bytes are looked at or directions are
 * treated apart. --timeout needs it only on UNIX sockets: on TCP the
 * watchdog reads the kernel's idle times instead.
 */
function needsCopy(options: ServeOptions, program: Program | undefined, address: Address): boolean {
  return !program || options.crlf || options.quit || options.readOnly || options.writeOnly ||
    (options.timeoutMs !== undefined && address.kind === "unix");
}

/** The operator's line when a program cannot be started at all (always printed, rate-limited). */
function cannotStart(program: Program, e: unknown): void {
  warn(`start ${program.command}`, `-p '${program.command}': cannot start: ${(e as Error).message}`);
}

/**
 * What became of a program: -v's end line (tcpserver's, with the
 * duration: `end PID status N (D ms)` or `end PID signal NAME (D ms)`), and
 * on socket's own stderr always, exits 126 and 127: the shell's "cannot
 * execute" and "not found", which otherwise only the client would see.
 */
function outcome(proc: Subprocess, program: Program, options: ServeOptions): Promise<number> {
  const started = performance.now();
  return proc.exited.then((code) => {
    const ms = Math.round(performance.now() - started);
    log(options, `end ${proc.pid} ${proc.signalCode ? `signal ${proc.signalCode}` : `status ${code}`} (${ms} ms)`);
    if (code === 126 || code === 127) {
      const why = code === 127 ? "command not found" : "command not executable";
      warn(`exit ${code} ${program.command}`, `-p '${program.command}': exit ${code} (${why})`);
    }
    return code;
  });
}

/** socket's own stdin, one reader shared by successive connections (a stream is read once). */
let stdinReader: { read(): Promise<{ done: boolean; value?: Bytes }> } | undefined;
function stdinSource(): ReadableStream<Bytes> {
  const reader = (stdinReader ??= Bun.stdin.stream().getReader());
  return new ReadableStream({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) controller.close();
      else if (value) controller.enqueue(value);
    },
  });
}

/** socket's own stdout: a peer's EOF flushes it but must not close it for the next connection. */
let stdoutWriter: ReturnType<typeof Bun.stdout.writer> | undefined;
function stdoutSink(): Sink {
  const writer = (stdoutWriter ??= Bun.stdout.writer());
  return { write: (c) => writer.write(c), flush: () => writer.flush(), end: () => writer.flush() };
}

export function flushStdout(): Promise<unknown> {
  return Promise.resolve(stdoutWriter?.flush());
}

/** Starts the program for the copy loop: pipes on the sides that are copied (-r, -w). */
export function startForCopy(options: ServeOptions, program: Program, env: Record<string, string>): PipedProgram {
  return startWithPipes(program, env, { input: !options.writeOnly, output: !options.readOnly });
}

/**
 * The local side of a copied connection: a program (started already), or
 * socket's own stdin/stdout.
 */
export function localSide(options: ServeOptions, started?: { proc: PipedProgram; program: Program }): LocalSide {
  if (!started) {
    return {
      sources: options.readOnly ? [] : [stdinSource()],
      sink: options.writeOnly ? null : stdoutSink(),
      program: null,
    };
  }
  const { proc, program } = started;
  const sources = [proc.stdout, proc.stderr].filter((s): s is ReadableStream<Bytes> => s instanceof ReadableStream);
  const sink = proc.stdin && typeof proc.stdin === "object" ? (proc.stdin as Sink) : null;
  return { sources, sink, program: { pid: proc.pid, exited: outcome(proc, program, options), kill: () => proc.kill("SIGKILL") } };
}

/** Starts the program (if any) for the copy loop; undefined when it cannot start (reported). */
function copiedSide(options: ServeOptions, program: Program | undefined, env: Record<string, string>): LocalSide | undefined {
  if (!program) return localSide(options);
  try {
    return localSide(options, { proc: startForCopy(options, program, env), program });
  } catch (e) {
    cannotStart(program, e);
    return undefined;
  }
}

function newCopy(options: ServeOptions, local: LocalSide): Copy {
  return new Copy(local, {
    crlf: options.crlf,
    quit: options.quit,
    timeoutMs: options.timeoutMs,
    log: (line) => log(options, line),
  });
}

/** Bun.connect adopts a connected descriptor (verified; its types only list host and unix). */
function connectDescriptor(fd: number, copy: Copy): Promise<unknown> {
  const options = { fd, socket: copyHandlers, data: copy, allowHalfOpen: true };
  return Bun.connect(options as unknown as Parameters<typeof Bun.connect<Copy | undefined>>[0]);
}

/**
 * Starts the program with the connection as its stdio, then lets go of our
 * copy (`release`), so the peer sees EOF the moment the program is done.
 * A program that cannot start costs this connection only.
 */
function handOff(
  program: Program,
  fd: number,
  env: Record<string, string>,
  release: () => void,
  options: ServeOptions,
  address: Address,
): Promise<unknown> {
  let proc;
  try {
    proc = startOnConnection(program, fd, env);
  } catch (e) {
    release();
    cannotStart(program, e);
    return Promise.resolve();
  }
  if (options.timeoutMs !== undefined && address.kind === "inet") watchIdle(fd, proc, options.timeoutMs, (line) => log(options, line));
  release();
  return outcome(proc, program, options);
}

/** Runs the copy loop on a connection held as a descriptor; resolves when it is done. */
export async function copyDescriptor(fd: number, options: ServeOptions, local: LocalSide): Promise<Error | undefined> {
  const copy = newCopy(options, local);
  await connectDescriptor(fd, copy);
  return copy.done;
}

/**
 * -q in a pool worker, without copying: the program reads the connection
 * itself; its stdout and stderr are a pipe spliced into the connection, and
 * at that pipe's end the connection is shut down (even while the program
 * still holds it as stdin). The program runs on to its end.
 */
async function quitWithSplice(program: Program, fd: number, env: Record<string, string>, options: ServeOptions): Promise<void> {
  let started;
  try {
    started = startOnPipes(program, env, fd);
  } catch (e) {
    close(fd);
    return cannotStart(program, e);
  }
  const say = (line: string) => log(options, line);
  const ended = outcome(started.proc, program, options);
  await bridge({ conn: fd, input: -1, output: started.output }, { quit: true, timeoutMs: undefined, log: say });
  await ended; // the program runs on to its end: without --timeout nothing bounds it
}

/**
 * Serves a connection socket holds only as a descriptor (a worker's
 * accept, a client's connect). Resolves when the connection is done.
 * `mayBlock`: the caller has nothing else to do meanwhile (a pool worker),
 * so -q may block its thread in the splice bridge.
 */
export async function serveDescriptor(
  fd: number,
  address: Address,
  options: ServeOptions,
  program: Program | undefined,
  mayBlock = false,
): Promise<Error | undefined> {
  if (options.gateway) return void (await serveGatewayDescriptor(fd, options));
  const env = program ? connectionEnv(fd, address) : {};
  if (program && !needsCopy(options, program, address)) {
    await handOff(program, fd, env, () => close(fd), options, address);
    return undefined;
  }
  const onlyQuit = options.quit && !options.crlf && !options.readOnly && !options.writeOnly && options.timeoutMs === undefined;
  if (program && mayBlock && onlyQuit) return void (await quitWithSplice(program, fd, env, options));
  const local = copiedSide(options, program, env);
  if (!local) return void close(fd);
  return copyDescriptor(fd, options, local);
}

/**
 * Serves a connection Bun's listener accepted. The handoff must happen in
 * the open handler, before Bun reads a byte of it.
 */
export function serveSocket(
  socket: Socket<Copy | undefined>,
  fd: number,
  address: Address,
  options: ServeOptions,
  program: Program | undefined,
): Promise<unknown> {
  if (options.gateway) return serveGatewaySocket(socket, options);
  const env = program ? connectionEnv(fd, address) : {};
  if (program && !needsCopy(options, program, address)) {
    setBlocking(fd); // Bun accepted it non-blocking; programs expect ordinary blocking I/O
    // close(), not end() or terminate(): no shutdown and no SO_LINGER on the shared socket.
    return handOff(program, fd, env, () => socket.close(), options, address);
  }
  // The classic server keeps the copy loop for -q: its one event loop cannot block in splice.
  const local = copiedSide(options, program, env);
  if (!local) {
    socket.close();
    return Promise.resolve();
  }
  const copy = newCopy(options, local);
  socket.data = copy;
  copy.attach(socket as Socket<Copy>);
  return copy.done;
}
