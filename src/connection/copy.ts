// The copy loop: joins a connection to a local side (socket's own
// stdin/stdout, or a program's pipes) when bytes must be looked at or the
// two directions treated apart (-c, -r, -w, -q, --timeout, the client).
// Otherwise the program is handed the connection itself and nothing is copied.
import type { EventSocket, SocketEvents } from "./events.ts";
import type { Process } from "./process.ts";
import { programEnd } from "./program.ts";
import { KILL_AFTER_MS } from "../system/reaper.ts";

export type Bytes = Uint8Array<ArrayBuffer>;

/** Where the peer's bytes go: Bun's FileSink (stdout, a program's stdin). */
export interface Sink {
  write(chunk: Uint8Array): number | Promise<number>;
  flush(): number | Promise<number>;
  end(): unknown;
}

export interface LocalSide {
  /** Bytes for the peer; each stream ends at EOF. Empty under -r. */
  sources: ReadableStream<Bytes>[];
  /** Where the peer's bytes go; null under -w. */
  sink: Sink | null;
  /**
   * A program is the local side: when its output ends the connection
   * closes (after it exits). Otherwise end of stdin half-closes and socket
   * goes on reading until the peer closes.
   */
  program: { process: Process; exited: Promise<unknown> } | null;
}

export interface CopyOptions {
  crlf: boolean;
  quit: boolean;
  /** Close the connection after this long with no byte either way. */
  timeoutMs: number | undefined;
  log: (line: string) => void;
  /**
   * A gateway: when the program is done, FIN, then the peer's remaining
   * bytes are read and dropped until its EOF (for at most this long) before
   * the close. Closing with unread bytes sends a reset, which can destroy
   * the answer before the peer has read it.
   */
  lingerMs?: number;
  /**
   * A gateway's CGI: output that comes after the connection has closed ends
   * the program (TERM, then KILL to its group) and is no longer read, as a
   * pool's CGI writing to the closed connection itself gets EPIPE. Read on
   * and dropped, a CGI writing without end would have socket read it
   * without end, and Bun's buffers grow faster than they are collected.
   * Without it (-p) the program runs on, its output drained (socket(1)).
   * With it the connection is read even with no sink, what comes dropped.
   */
  endUnheard?: boolean;
  /**
   * A gateway's --send-timeout: output the peer takes no byte of for this
   * long (while some waits for it) ends the connection: `stalled` is told
   * how long it waited, and does the rest (the line, the CGI stopped, the
   * connection dropped). Output does not wait while the program is silent.
   */
  sendTimeoutMs?: number;
  stalled?: (waitedMs: number) => void;
}

const CR = 13;
const LF = 10;

const CRLF = new Uint8Array([CR, LF]);

/** Splits at every `byte` (indexOf is native and fast) and joins the pieces with `between`. */
function replaceByte(chunk: Uint8Array, byte: number, between: Uint8Array | null): Uint8Array {
  let at = chunk.indexOf(byte);
  if (at < 0) return chunk;
  const pieces: Uint8Array[] = [];
  let start = 0;
  while (at >= 0) {
    pieces.push(chunk.subarray(start, at));
    if (between) pieces.push(between);
    start = at + 1;
    at = chunk.indexOf(byte, start);
  }
  pieces.push(chunk.subarray(start));
  return Buffer.concat(pieces);
}

const dropCR = (chunk: Uint8Array) => replaceByte(chunk, CR, null);
const lfToCrlf = (chunk: Uint8Array) => replaceByte(chunk, LF, CRLF);

/** Per-connection state; Bun's socket handlers are shared, so it rides on socket.data. */
export class Copy implements SocketEvents {
  private socket: EventSocket | undefined;
  private drainWaiter: (() => void) | undefined;
  private idleTimer: Timer | undefined;
  private lingerTimer: Timer | undefined;
  /** --send-timeout's timer while output waits for the peer to take some (sendTimeoutMs). */
  private sendTimer: Timer | undefined;
  private peerEnded = false;
  /**
   * Our side half-closed at end of stdin. Bun has no end event for a socket
   * it half-closed first: the peer's close then comes as the close alone.
   */
  private halfClosed = false;
  /** The connection is being ended from our side (a close, a cut, a timeout): its close is not the peer's. */
  private endedHere = false;
  private closed = false;
  /** The request was ended (--request-timeout): nothing more of the program's goes to the peer. */
  private cutOff = false;
  /** The program was ended for writing after the close (endUnheard). */
  private unheard = false;
  /** Bytes the socket took for the peer. */
  private sentBytes = 0;
  private finish!: (error: Error | undefined) => void;
  /** The socket error that ended the connection (a reset), if one did. */
  private error: Error | undefined;
  /** Resolves when the connection is closed and the local side is done: with the socket error, if any. */
  readonly done = new Promise<Error | undefined>((resolve) => (this.finish = resolve));

  constructor(
    private readonly local: LocalSide,
    private readonly options: CopyOptions,
  ) {}

  /** Called from the socket's open handler (or at once for Bun.connect). */
  attach(socket: EventSocket): void {
    this.socket = socket;
    // -w: never read the socket. A gateway's is read (what comes past its body is dropped): paused, its close would go unseen.
    if (!this.local.sink && !this.options.endUnheard) socket.pause();
    this.touch();
    void this.pump();
  }

  private touch(): void {
    if (this.options.timeoutMs === undefined) return;
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      this.options.log("connection timed out");
      this.endedHere = true;
      // Reset, not FIN: a peer that stopped reading would never take the FIN.
      if (!this.closed) this.socket?.terminate();
    }, this.options.timeoutMs);
  }

  /** Bytes the peer has been sent so far. */
  get sent(): number {
    return this.sentBytes;
  }

  /** The request is over (--request-timeout): nothing more of the program's goes; `answer` then the end, or without one a reset (the answer is cut). */
  cut(answer: Uint8Array | undefined): void {
    if (this.closed || !this.socket || this.cutOff) return;
    this.cutOff = true;
    this.endedHere = true;
    if (!answer) return void this.socket.terminate();
    this.socket.write(answer);
    this.close();
  }

  onData(chunk: Uint8Array): void {
    this.touch();
    const sink = this.local.sink;
    if (!sink) return;
    try {
      // A program that exits without reading makes these fail with EPIPE,
      // synchronously or as a rejected promise: either way only its input is lost.
      const written = sink.write(this.options.crlf ? dropCR(chunk) : chunk);
      if (written instanceof Promise) written.catch(() => this.sinkFailed());
      const flushed = sink.flush();
      if (flushed instanceof Promise) {
        // Slow reader on our side: stop reading the peer until it catches up.
        this.socket?.pause();
        flushed.then(
          () => this.socket?.resume(),
          () => this.sinkFailed(),
        );
      }
    } catch {
      this.sinkFailed();
    }
  }

  /** The program stopped reading (exited, closed stdin): its input is discarded. */
  private sinkFailed(): void {
    this.local.sink = null;
    this.socket?.resume();
  }

  /** EOF to our side: the program's stdin is closed (stdout is only flushed). */
  private endSink(): void {
    const sink = this.local.sink;
    this.local.sink = null;
    try {
      const ended = sink?.end();
      if (ended instanceof Promise) ended.catch(() => {});
    } catch {
      // the program has already gone
    }
  }

  onEnd(): void {
    this.options.log("connection closed by peer");
    this.peerEnded = true;
    this.endSink();
    // The client's job is over when the peer is done; a program still
    // gets to finish its answer (socket 1.1 lost it here).
    if (!this.local.program || this.lingerTimer) this.close();
  }

  onDrain(): void {
    this.drainWaiter?.();
  }

  onClose(error?: Error): void {
    this.error ??= error;
    if (this.closed) return;
    this.closed = true;
    if (this.halfClosed && !this.peerEnded && !this.endedHere && !error) this.options.log("connection closed by peer");
    clearTimeout(this.idleTimer);
    clearTimeout(this.lingerTimer);
    clearTimeout(this.sendTimer);
    this.drainWaiter?.();
    const { program } = this.local;
    if (!program) return this.finish(this.error);
    // The program's input ends with the connection; it runs to its end
    // (its output is still drained, so it never blocks on a full pipe),
    // bounded only by --timeout.
    this.endSink();
    void programEnd(program.process, this.options.timeoutMs, this.options.log).finally(() => this.finish(this.error));
  }

  private async send(chunk: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < chunk.length && !this.closed && !this.cutOff && this.socket) {
      const written = this.socket.write(chunk.subarray(offset));
      offset += Math.max(written, 0);
      this.sentBytes += Math.max(written, 0);
      if (written > 0 || offset >= chunk.length) this.waiting(false); // taken: --send-timeout starts again
      if (written < 0) return;
      if (offset < chunk.length) {
        this.waiting(true);
        await new Promise<void>((resolve) => (this.drainWaiter = resolve));
      }
      this.drainWaiter = undefined;
    }
  }

  /** Output waits for the peer (--send-timeout's timer runs, from the first wait) or not. */
  private waiting(on: boolean): void {
    const { sendTimeoutMs, stalled } = this.options;
    if (!on || sendTimeoutMs === undefined || !stalled) {
      clearTimeout(this.sendTimer);
      this.sendTimer = undefined;
    } else if (this.sendTimer === undefined) {
      const since = Date.now();
      this.sendTimer = setTimeout(() => !this.closed && stalled(Date.now() - since), sendTimeoutMs);
    }
  }

  private async pumpOne(source: ReadableStream<Bytes>): Promise<void> {
    for await (const chunk of source) {
      if (this.closed || this.cutOff) {
        if (this.closed && this.local.program && this.options.endUnheard) return this.endUnheard(this.local.program.process);
        if (this.local.program) continue; // discarded: a program must not block writing to nobody
        return;
      }
      this.touch();
      await this.send(this.options.crlf ? lfToCrlf(chunk) : chunk);
    }
  }

  /** A gateway's CGI wrote after its connection closed: nobody hears it, so it ends (CopyOptions.endUnheard). */
  private endUnheard(process: Process): void {
    // Exited: what still writes is a process it left in the background, which the cancelled read gives EPIPE.
    if (this.unheard || process.exitCode !== null || process.signalCode !== null) return;
    this.unheard = true;
    this.options.log(`program ${process.pid} ended: it wrote after its connection closed`);
    process.stop(KILL_AFTER_MS);
  }

  private async pump(): Promise<void> {
    const { sources, program } = this.local;
    if (sources.length === 0 && !program) return; // -r: the peer alone decides
    try {
      await Promise.all(sources.map((s) => this.pumpOne(s)));
    } catch {
      // a read error on our side ends input like EOF does
    }
    if (this.closed) return;
    if (program) {
      // -q: the program's output has ended, that is enough; else it must be done.
      if (this.options.quit) this.options.log("connection closed");
      else await program.exited;
      this.close();
    } else if (this.options.quit || !this.local.sink) {
      // -q, or nothing more to read from the peer (-w, or it closed already)
      if (this.options.quit) this.options.log("connection closed");
      this.close();
    } else {
      this.options.log("end of input on stdin");
      this.halfClosed = true;
      this.socket?.shutdown();
    }
  }

  close(): void {
    if (this.closed || !this.socket) return;
    this.endedHere = true;
    const { lingerMs } = this.options;
    if (lingerMs === undefined || this.peerEnded) return void this.socket.end();
    if (this.lingerTimer) return;
    this.endSink(); // what still comes is dropped
    this.socket.resume();
    this.socket.shutdown();
    // A peer that never closes: a reset, as it would not take a FIN anyway.
    this.lingerTimer = setTimeout(() => this.socket?.terminate(), lingerMs);
  }
}
