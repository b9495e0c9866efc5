// The local side of a copied connection (the copy loop in copy.ts joins it
// to the connection): a program on pipes, or socket's own stdin and stdout
// (the client, a server without -p). Used by serve.ts and by the pool's
// --prestart, which starts the program before its connection exists.
import type { ServeOptions } from "../options.ts";
import { verbose } from "../system/log.ts";
import { Copy, type Bytes, type LocalSide, type Sink } from "./copy.ts";
import { adoptDescriptor, adoptSocket, type EventSocket } from "./events.ts";
import { outcome, startWithPipes, type Program } from "./program.ts";
import type { PipedProcess } from "./process.ts";

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
export function startForCopy(options: ServeOptions, program: Program, vars: Record<string, string>): PipedProcess {
  return startWithPipes(program, vars, { input: !options.writeOnly, output: !options.readOnly }, options.requestTimeoutMs !== undefined);
}

/** socket's own stdin and stdout as the local side (none under -r or -w respectively). */
export function ownStdio(options: ServeOptions): LocalSide {
  return { sources: options.readOnly ? [] : [stdinSource()], sink: options.writeOnly ? null : stdoutSink(), program: null };
}

/** A program started by startForCopy as the local side. */
export function programSide(options: ServeOptions, proc: PipedProcess, program: Program): LocalSide {
  const sources = [proc.stdout, proc.stderr].filter((s): s is ReadableStream<Bytes> => s !== undefined);
  const sink: Sink | null = proc.stdin ?? null;
  return { sources, sink, program: { process: proc, exited: outcome(proc, program, options) } };
}

function newCopy(options: ServeOptions, local: LocalSide): Copy {
  return new Copy(local, { crlf: options.crlf, quit: options.quit, timeoutMs: options.timeoutMs, log: (line) => verbose(options, line) });
}

/** Runs the copy loop on a connection held as a descriptor; resolves when it is done, with the socket error if one ended it. */
export async function copyDescriptor(fd: number, options: ServeOptions, local: LocalSide): Promise<Error | undefined> {
  const copy = newCopy(options, local);
  await adoptDescriptor(fd, copy);
  return copy.done;
}

/** Runs the copy loop on a socket Bun's listener accepted (from its open handler). */
export function copySocket(socket: EventSocket, options: ServeOptions, local: LocalSide): Promise<Error | undefined> {
  const copy = newCopy(options, local);
  adoptSocket(socket, copy);
  return copy.done;
}
