// Serving one plain connection (no protocol), the same way whoever accepted
// it (the classic server, a pool worker, the client's connect): hand it to
// the program, or run the copy loop between it and the program's pipes or
// socket's own stdin/stdout; in a pool worker, -q splices the program's
// output instead of copying it.
import type { Address } from "../net/address.ts";
import type { ServeOptions } from "../options.ts";
import { close, setBlocking } from "../system/fd.ts";
import { verbose } from "../system/log.ts";
import type { EventSocket } from "./events.ts";
import { copyDescriptor, copySocket, ownStdio, programSide, startForCopy } from "./local.ts";
import type { LocalSide } from "./copy.ts";
import { cannotStart, connectionVariables, outcome, startOnConnection, startOnPipes, type Engine, type Program } from "./program.ts";
import type { Process } from "./process.ts";
import { bridge } from "./splice.ts";
import { watchIdle } from "./watchdog.ts";
import { endWhenDue } from "./deadline.ts";

/**
 * --request-timeout's line and count for a plain connection's program
 * (request/request-deadline.ts, given by the runner): nothing is written
 * on the connection, the program and its group are ended.
 */
export type OnOverdue = (o: { pid: number; script: string; ranMs: number }) => void;

/** The program (if any) ends at --request-timeout. */
function bound(proc: Process | undefined, program: Program | undefined, options: ServeOptions, onOverdue: OnOverdue | undefined): void {
  if (proc && program && onOverdue) endWhenDue(proc, options.requestTimeoutMs, (ranMs) => onOverdue({ pid: proc.pid, script: program.command, ranMs }));
}

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

/** Starts the program (if any) for the copy loop; undefined when it cannot start (reported). */
function copiedSide(options: ServeOptions, program: Program | undefined, vars: Record<string, string>): LocalSide | undefined {
  if (!program) return ownStdio(options);
  try {
    return programSide(options, startForCopy(options, program, vars), program);
  } catch (e) {
    cannotStart(program, e, options);
    return undefined;
  }
}

/**
 * Starts the program with the connection as its stdio, then lets go of our
 * copy (`release`), so the peer sees EOF the moment the program is done.
 * A program that cannot start costs this connection only. "blocking": a
 * pool worker without --timeout (nothing needs a timer while it runs).
 */
function handOff(
  program: Program,
  fd: number,
  release: () => void,
  options: ServeOptions,
  address: Address,
  engine: Engine,
  onOverdue: OnOverdue | undefined,
): Promise<unknown> {
  let proc;
  const started = performance.now();
  try {
    proc = startOnConnection(program, fd, connectionVariables(fd, address), engine, options.requestTimeoutMs !== undefined);
  } catch (e) {
    release();
    cannotStart(program, e, options);
    return Promise.resolve();
  }
  if (options.timeoutMs !== undefined && address.kind === "inet") watchIdle(fd, proc, options.timeoutMs, (line) => verbose(options, line));
  bound(proc, program, options, onOverdue);
  release();
  return outcome(proc, program, options, started);
}

/**
 * -q in a pool worker, without copying: the program reads the connection
 * itself; its stdout and stderr are a pipe spliced into the connection, and
 * at that pipe's end the connection is shut down (even while the program
 * still holds it as stdin). The program runs on to its end.
 */
async function quitWithSplice(program: Program, fd: number, address: Address, options: ServeOptions): Promise<void> {
  let started;
  const startedAt = performance.now();
  try {
    started = startOnPipes(program, connectionVariables(fd, address), fd);
  } catch (e) {
    close(fd);
    return cannotStart(program, e, options);
  }
  // A blocking program is waited for only after the bridge.
  await bridge({ conn: fd, input: -1, output: started.output }, { quit: true, timeoutMs: undefined, log: (line) => verbose(options, line) });
  await outcome(started.proc, program, options, startedAt); // the program runs on to its end: without --timeout nothing bounds it
}

/**
 * Serves a connection socket holds only as a descriptor (a worker's
 * accept, a client's connect). Resolves when the connection is done, with
 * the socket error that ended a copied one, if any.
 * `mayBlock`: the caller has nothing else to do meanwhile (a pool worker),
 * so -q may block its thread in the splice bridge. Under --request-timeout
 * a timer ends the program: it is evented, and -q copies.
 */
export async function serveDescriptor(
  fd: number,
  address: Address,
  options: ServeOptions,
  program: Program | undefined,
  mayBlock = false,
  onOverdue?: OnOverdue,
): Promise<Error | undefined> {
  const timed = options.timeoutMs !== undefined || options.requestTimeoutMs !== undefined;
  if (program && !needsCopy(options, program, address)) {
    const engine = mayBlock && !timed ? "blocking" : "evented";
    await handOff(program, fd, () => close(fd), options, address, engine, onOverdue);
    return undefined;
  }
  const onlyQuit = options.quit && !options.crlf && !options.readOnly && !options.writeOnly && !timed;
  if (program && mayBlock && onlyQuit) return void (await quitWithSplice(program, fd, address, options));
  const local = copiedSide(options, program, program ? connectionVariables(fd, address) : {});
  if (!local) return void close(fd);
  bound(local.program?.process, program, options, onOverdue);
  return copyDescriptor(fd, options, local);
}

/**
 * Serves a connection Bun's listener accepted. The handoff must happen in
 * the open handler, before Bun reads a byte of it.
 */
export function serveSocket(
  socket: EventSocket,
  fd: number,
  address: Address,
  options: ServeOptions,
  program: Program | undefined,
  onOverdue?: OnOverdue,
): Promise<unknown> {
  if (program && !needsCopy(options, program, address)) {
    setBlocking(fd); // Bun accepted it non-blocking; programs expect ordinary blocking I/O
    // close(), not end() or terminate(): no shutdown and no SO_LINGER on the shared socket.
    return handOff(program, fd, () => socket.close(), options, address, "evented", onOverdue);
  }
  // The classic server keeps the copy loop for -q: its one event loop cannot block in splice.
  const local = copiedSide(options, program, program ? connectionVariables(fd, address) : {});
  if (!local) {
    socket.close();
    return Promise.resolve();
  }
  bound(local.program?.process, program, options, onOverdue);
  return copySocket(socket, options, local);
}
