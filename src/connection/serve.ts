// Serving one accepted connection, the same way whoever accepted it (the
// classic server, a pool worker): hand it to the program, or run the copy
// loop between it and the program's pipes or socket's own stdin/stdout.
import type { Socket } from "bun";
import type { Address } from "../net/address.ts";
import type { Options } from "../cli.ts";
import { Copy, copyHandlers, type Bytes, type LocalSide, type Sink } from "./copy.ts";
import { close, setBlocking } from "../system/libc.ts";
import { connectionEnv, startOnConnection, startWithPipes, type Program } from "./program.ts";
import { serveGatewayDescriptor, serveGatewaySocket } from "../gateway/gateway.ts";

/**
 * What serving a connection needs to know, a subset of Options a worker is
 * given too. A gateway (--scgi/--fastcgi) also needs the -p command itself
 * (it never goes through sh) and the pool's size (FastCGI's GET_VALUES).
 */
export type ServeOptions = Pick<Options, "crlf" | "quit" | "readOnly" | "writeOnly" | "verbose" | "timeoutMs"> &
  Partial<Pick<Options, "gateway" | "program" | "pool">>;

export function log(options: { verbose: boolean }, line: string): void {
  if (options.verbose) process.stderr.write(`${line}\n`);
}

/** socket(1)'s -v line for an accepted connection. */
export function connectionMessage(address: Address, peerIp: () => string): string {
  return address.kind === "unix" ? `unix: connection from ${address.path}` : `inet: connection from ${peerIp()}`;
}

/** The copy loop is needed when bytes are looked at or directions are treated apart. */
function needsCopy(options: ServeOptions, program: Program | undefined): boolean {
  return !program || options.crlf || options.quit || options.readOnly || options.writeOnly || options.timeoutMs !== undefined;
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

/** The local side of a copied connection, and the program's exit if there is one. */
function localSide(options: ServeOptions, program: Program | undefined, env: Record<string, string>): LocalSide {
  if (!program) {
    return {
      sources: options.readOnly ? [] : [stdinSource()],
      sink: options.writeOnly ? null : stdoutSink(),
      program: null,
    };
  }
  const proc = startWithPipes(program, env, { input: !options.writeOnly, output: !options.readOnly });
  const sources = [proc.stdout, proc.stderr].filter((s): s is ReadableStream<Bytes> => s instanceof ReadableStream);
  const sink = proc.stdin && typeof proc.stdin === "object" ? (proc.stdin as Sink) : null;
  return { sources, sink, program: { exited: proc.exited, kill: () => proc.kill("SIGKILL") } };
}

export function newCopy(options: ServeOptions, program: Program | undefined, env: Record<string, string>): Copy {
  return new Copy(localSide(options, program, env), {
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
 */
function handOff(program: Program, fd: number, env: Record<string, string>, release: () => void): Promise<unknown> {
  let proc;
  try {
    proc = startOnConnection(program, fd, env);
  } finally {
    release();
  }
  return proc.exited;
}

/**
 * Serves a connection socket holds only as a descriptor (a worker's
 * accept, a client's connect). Resolves when the connection is done.
 */
export async function serveDescriptor(
  fd: number,
  address: Address,
  options: ServeOptions,
  program: Program | undefined,
): Promise<void> {
  if (options.gateway) return serveGatewayDescriptor(fd, options);
  const env = program ? connectionEnv(fd, address) : {};
  if (program && !needsCopy(options, program)) {
    await handOff(program, fd, env, () => close(fd));
    return;
  }
  const copy = newCopy(options, program, env);
  await connectDescriptor(fd, copy);
  await copy.done;
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
  if (program && !needsCopy(options, program)) {
    setBlocking(fd); // Bun accepted it non-blocking; programs expect ordinary blocking I/O
    // close(), not end() or terminate(): no shutdown and no SO_LINGER on the shared socket.
    return handOff(program, fd, env, () => socket.close());
  }
  const copy = newCopy(options, program, env);
  socket.data = copy;
  copy.attach(socket as Socket<Copy>);
  return copy.done;
}
