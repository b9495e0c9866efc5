// FastCGI, responder role: one connection's state machine on Bun's loop, as
// the classic server (-f) serves many at once (fastcgi-records.ts is the
// wire format; a pool worker serves its one connection with blocking calls
// instead, fastcgi-worker.ts). Requests are not multiplexed
// (FCGI_MPXS_CONNS=0): one runs at a time; with FCGI_KEEP_CONN the next may
// follow on the same connection.
import type { EventSocket, SocketEvents } from "../connection/events.ts";
import type { GatewayOptions } from "../options.ts";
import { BAD_GATEWAY, bodyOverLimit, gatewayLog, HEADER_TIMEOUT_MS, type CgiSource } from "../request/cgi.ts";
import { endProgram, groupLives, startProgram, type Cgi } from "./cgi-process.ts";
import type { Variable } from "../request/variables.ts";
import { untilExit } from "./until-exit.ts";
import { BodyQueue, closeSpool, spoolFor, spoolRecord, type BodySpool } from "./body-spool.ts";
import { encodeRecord, endRequest, gatherParams, handleRecord, MAX_CONTENT, RecordReader, STATUS, TYPE, type ResponderSteps } from "../request/fastcgi-records.ts";

/** FCGI_MAX_CONNS / FCGI_MAX_REQS advertised by -f, which has no fixed limit: advice to the web server, not enforced. */
export const CLASSIC_MAX_CONNS = 100;

/** A request from BEGIN_REQUEST on. */
interface Request {
  id: number;
  keep: boolean;
  params: Uint8Array[];
  paramsSize: number;
  proc: Cgi | undefined;
  /** The empty STDIN record came (or the request is over): the program has all its input. */
  inputEnded: boolean;
  /** Resolves when inputEnded becomes true: the program's output, held until then, may go. */
  inputEnd: Promise<void>;
  endInput: () => void;
  /** No CONTENT_LENGTH (Apache's chunked body): the body is spooled whole before the program starts. */
  spool: BodySpool | undefined;
  /** Output held to HOLD_BYTES: the program waits to write, so its body is taken in (to disk) rather than paused. */
  outputStalled: boolean;
  /** A write to the program's stdin Bun has yet to finish: its loop must run for it. */
  flushing: boolean;
  /** Body bytes waiting for that write to finish, in order (past 256 KiB, on disk). */
  queue: BodyQueue;
  /** Body bytes received (streamed), bounded by --max-body. */
  received: number;
  /** The program's stdout and stderr both read to their end. */
  outputDone: Promise<void> | undefined;
}

function newRequest(id: number, keep: boolean): Request {
  let endInput!: () => void;
  const inputEnd = new Promise<void>((resolve) => (endInput = resolve));
  const request: Request = {
    id,
    keep,
    params: [],
    paramsSize: 0,
    proc: undefined,
    inputEnded: false,
    inputEnd,
    endInput: () => {
      request.inputEnded = true;
      endInput();
    },
    spool: undefined,
    outputStalled: false,
    flushing: false,
    queue: new BodyQueue(),
    received: 0,
    outputDone: undefined,
  };
  return request;
}

/**
 * The program's output held until the end of its body (as fcgiwrap does:
 * nginx stops sending the body once it relays the answer's header, so a
 * CGI that writes its header first would never get the rest). Past this
 * much held, its stdout is no longer read: the CGI waits, not the body.
 */
export const HOLD_BYTES = 256 * 1024;


/**
 * Replies to what the client sends (UNKNOWN_TYPE, GET_VALUES_RESULT,
 * END_REQUEST refusals) are queued without waiting: a client that sends
 * such records and never reads would grow the queue without bound. Past
 * this many bytes waiting the connection is dropped.
 *
 * Why not stop reading instead: the queue also holds the program's output
 * (forward() awaits the socket, so at most a record per stream, about
 * 128 KiB), and a web server such as Apache sends the whole body before it
 * reads any answer. Pausing input because output waits would stop the body
 * the program may be waiting for, while the web server waits for us: a
 * deadlock. A bound far above the program's share never trips for a real
 * web server, which does not send hundreds of KiB of management records
 * without reading the replies.
 */
export const QUEUE_LIMIT = 256 * 1024;

/**
 * Connections alive in this process. When it is told to stop (a pool
 * worker's TERM/INT/HUP), a kept connection must not take new requests, or
 * a web server reusing it would keep a draining worker busy: idle ones
 * close now, busy ones after their request.
 */
const live = new Set<FastCgiHandler>();
let stopping = false;

/** This process stops (the worker drains, the classic server ends): no kept connection takes another request. */
export function stopKeptConnections(): void {
  stopping = true;
  for (const handler of live) handler.stop();
}

/** One FastCGI connection from Bun's listener (-f). */
export class FastCgiHandler implements SocketEvents {
  private socket: EventSocket | undefined;
  private readonly reader = new RecordReader();
  private request: Request | undefined;
  private closed = false;
  private ending = false;
  /** The web server closed its side (EOF): no further request on this connection. */
  private peerEnded = false;
  private timer: Timer | undefined;
  /** Bytes waiting for the socket to drain, in order, and how many. */
  private queue: Uint8Array[] = [];
  private queued = 0;
  private drained: (() => void) | undefined;
  private finish!: () => void;
  readonly done = new Promise<void>((resolve) => (this.finish = resolve));

  constructor(
    private readonly options: GatewayOptions,
    private readonly source: CgiSource,
    /** FCGI_MAX_CONNS and FCGI_MAX_REQS for GET_VALUES. */
    private readonly maxConns: number,
  ) {}

  private pause(): void {
    this.socket?.pause();
  }

  private resume(): void {
    this.socket?.resume();
  }

  attach(socket: EventSocket): void {
    this.socket = socket;
    live.add(this);
    this.awaitHeader();
  }

  /** This process is stopping: no further request on this connection. */
  stop(): void {
    if (!this.request) this.end();
  }

  /**
   * A request's header (BEGIN_REQUEST, PARAMS to the empty PARAMS) must
   * come within an absolute deadline from the accept, or from the end of
   * the previous request on a kept connection: HEADER_TIMEOUT_MS, or
   * --timeout when smaller. Bytes arriving do not extend it, or a client
   * dripping a byte at a time would hold the worker for ever.
   */
  private awaitHeader(): void {
    clearTimeout(this.timer);
    if (this.closed) return;
    const ms = Math.min(HEADER_TIMEOUT_MS, this.options.timeoutMs ?? Infinity);
    this.timer = setTimeout(() => this.drop(this.ending ? "connection timed out" : "no complete request in time"), ms);
  }

  /** While a program runs, only --timeout applies: every byte moved either way restarts it. */
  private touch(): void {
    if (!this.request?.proc) return; // waiting for a header: its deadline does not move
    clearTimeout(this.timer);
    const ms = this.options.timeoutMs;
    if (ms === undefined || this.closed) return;
    this.timer = setTimeout(() => this.drop("connection timed out"), ms);
  }

  /** Ends the connection for a reason a -v line gives: its program (if any) goes too. */
  private drop(why: string): void {
    gatewayLog(this.options, "fastcgi", why);
    this.request?.proc?.kill("SIGKILL");
    this.socket?.terminate();
  }

  onData(chunk: Uint8Array): void {
    this.touch();
    try {
      const records = this.reader.push(chunk);
      if ("error" in records) return this.drop(records.error);
      for (const record of records) {
        const error = handleRecord(record, this.steps);
        if (error) return this.drop(error);
        if (this.queued > QUEUE_LIMIT) return this.drop(`the web server does not read its replies: over ${QUEUE_LIMIT / 1024} KiB wait`);
        if (this.closed || this.ending) return;
      }
    } catch (e) {
      // A bug must cost this connection only, not the worker and its other work.
      this.drop(`internal error: ${(e as Error).message}`);
    }
  }

  /** The protocol's rules are fastcgi-records.ts's; these are this connection's steps. */
  private readonly steps: ResponderSteps = {
    current: () => this.request?.id,
    maxConns: () => this.maxConns,
    send: (bytes) => this.send(bytes),
    log: (line) => gatewayLog(this.options, "fastcgi", line),
    end: () => this.end(),
    begin: (id, keep) => void (this.request = newRequest(id, keep)),
    abort: () => this.abort(),
    params: (content) => this.params(content),
    stdin: (content) => this.stdin(content),
  };

  private params(content: Uint8Array): string | undefined {
    const request = this.request!;
    if (request.proc || request.outputDone || request.spool) return "PARAMS after the end of PARAMS";
    const gathered = gatherParams(request, content);
    if (typeof gathered !== "object") return gathered;
    const { variables, streams } = gathered;
    const spool = spoolFor(variables, streams, this.options);
    if (spool) {
      request.spool = spool;
      this.awaitBody();
      return undefined;
    }
    this.run(request, variables, "pipe");
    return undefined;
  }

  /** While a body is spooled: at most HEADER_TIMEOUT_MS (or --timeout) between its records (a refused body's, dropped, do not count). */
  private awaitBody(): void {
    clearTimeout(this.timer);
    const ms = Math.min(HEADER_TIMEOUT_MS, this.options.timeoutMs ?? Infinity);
    this.timer = setTimeout(() => this.drop("connection timed out in the body"), ms);
  }

  /** A spooled body is complete: the program starts with it as stdin and CONTENT_LENGTH its size. */
  private runSpooled(request: Request, variables: Variable[], stdin: number | "ignore"): void {
    const spool = request.spool!;
    request.spool = undefined;
    request.endInput();
    try {
      this.run(request, variables, stdin);
    } finally {
      closeSpool(spool); // the program has its own
    }
  }

  private run(request: Request, variables: Variable[], stdin: "pipe" | "ignore" | number): void {
    const proc = startProgram(this.source, variables, this.options, stdin, undefined);
    if ("answer" in proc) {
      request.outputDone = Promise.resolve();
      this.send(encodeRecord(TYPE.STDOUT, request.id, proc.answer));
      void this.complete(request, proc.answer === BAD_GATEWAY ? 1 : 0);
      return;
    }
    request.proc = proc;
    const { stdout, stderr } = proc as unknown as { stdout: ReadableStream<Uint8Array>; stderr: ReadableStream<Uint8Array> };
    request.outputDone = Promise.all([this.forward(stdout, TYPE.STDOUT, request), this.forward(stderr, TYPE.STDERR, request)]).then(() => {});
    void Promise.all([proc.exited, request.outputDone]).then(([status]) => this.complete(request, status));
    this.touch();
  }

  private stdin(content: Uint8Array): string | undefined {
    const request = this.request!;
    if (request.spool) return this.spoolStdin(request, content);
    if (!request.outputDone) return "STDIN before the end of PARAMS";
    request.received += content.length;
    // More than its CONTENT_LENGTH, which was within the limit: not a web server's doing.
    const over = bodyOverLimit(this.options, request.received, "received");
    if (over) return over;
    if (typeof request.proc?.stdin !== "object") return undefined; // the program could not run
    if (content.length === 0) {
      request.endInput();
      if (!request.flushing) endInput(request.proc);
      return undefined;
    }
    if (request.flushing) {
      request.queue.push(content);
      // The program reads slower than the web server sends: stop reading
      // until it catches up. Unless its output is held and it waits to write
      // (a CGI that answers before it reads): then the web server waits for
      // us to take the body, so it is taken in, past 256 KiB into a file.
      if (!request.outputStalled) this.pause();
      return undefined;
    }
    this.give(request, request.proc, content);
    return undefined;
  }

  /** Body bytes into the program's stdin; when Bun cannot write them at once, the next wait in request.queue until it has. */
  private give(request: Request, proc: Cgi, bytes: Uint8Array): void {
    const sink = proc.stdin;
    if (typeof sink !== "object") return;
    try {
      const written = sink.write(bytes);
      if (written instanceof Promise) written.catch(() => {});
      const flushed = sink.flush();
      if (!(flushed instanceof Promise)) return;
      request.flushing = true;
      const caughtUp = () => {
        request.flushing = false;
        this.pump(request, proc);
      };
      flushed.then(caughtUp, caughtUp);
    } catch {
      // the program exited without reading all its input: the rest is dropped
      request.queue.clear();
    }
  }

  /** What waits in request.queue into the program's stdin until Bun must wait for the pipe again; all gone: EOF after the body's end, and reading on. */
  private pump(request: Request, proc: Cgi): void {
    for (let head = request.queue.head(); head && !request.flushing; head = request.queue.head()) {
      request.queue.take(head.length); // its bytes are not reused: Bun may keep them
      this.give(request, proc, head);
    }
    if (request.flushing) return;
    if (request.inputEnded) endInput(proc);
    this.resume();
  }

  /** A record of a spooled body, as fastcgi-worker.ts's spoolStdin says. */
  private spoolStdin(request: Request, content: Uint8Array): string | undefined {
    const step = spoolRecord(request.spool!, content, request.id, this.options, (bytes) => this.send(bytes));
    if ("more" in step) this.awaitBody();
    if ("run" in step) this.runSpooled(request, step.run.variables, step.run.stdin);
    if ("refused" in step) {
      request.spool = undefined;
      request.outputDone = Promise.resolve();
      request.endInput();
      this.complete(request, 0);
    }
    return undefined;
  }

  /**
   * The program's stdout or stderr as STDOUT or STDERR records, at the
   * pace the socket takes them; held (up to HOLD_BYTES, then not read)
   * until the request's body has ended.
   */
  private async forward(stream: ReadableStream<Uint8Array>, type: number, request: Request): Promise<void> {
    const held: Uint8Array[] = [];
    let heldBytes = 0;
    const out = async (chunk: Uint8Array) => {
      for (let at = 0; at < chunk.length; at += MAX_CONTENT) {
        if (this.closed) return;
        this.touch();
        this.send(encodeRecord(type, request.id, chunk.subarray(at, at + MAX_CONTENT)));
        await this.writable();
      }
    };
    const release = async () => {
      for (let chunk = held.shift(); chunk; chunk = held.shift()) await out(chunk);
      heldBytes = 0;
    };
    try {
      const proc = request.proc!;
      const chunks = untilExit(stream, proc.exited, () => groupLives(proc.pid));
      for (let next = chunks.next(); ; next = chunks.next()) {
        // Held output goes the moment the body ends, not at the program's next write.
        if (held.length > 0 && !request.inputEnded) await Promise.race([next, request.inputEnd]);
        if (request.inputEnded) await release();
        const { value, done } = await next;
        if (done) break;
        if (request.inputEnded) {
          await out(value);
          continue;
        }
        held.push(value);
        heldBytes += value.length;
        if (heldBytes >= HOLD_BYTES) {
          // The next read waits: back-pressure on the program, which then
          // reads no more of its body either; the body is taken in (see stdin).
          request.outputStalled = true;
          this.resume();
          await request.inputEnd;
        }
      }
    } catch {
      // a read error ends that stream like EOF
    }
    await request.inputEnd;
    await release();
  }

  private abort(): void {
    const proc = this.request?.proc;
    if (!proc) {
      // Not started yet: nothing to kill, the request just ends (and the
      // header deadline runs on: aborting is no way to restart it).
      const request = this.request!;
      request.outputDone = Promise.resolve();
      const spooled = request.spool;
      if (spooled) closeSpool(spooled);
      request.spool = undefined;
      request.endInput();
      // Aborted while its body was spooled: the header was complete, its deadline over.
      void this.complete(request, 0, spooled !== undefined);
      return;
    }
    gatewayLog(this.options, "fastcgi", `request ${this.request!.id} aborted by the web server`);
    this.request!.endInput();
    this.request!.queue.clear();
    endInput(proc); // EOF too: a child of the program reading its stdin must not keep the output open
    endProgram(proc);
  }

  /** The empty STDOUT, END_REQUEST, then the next request or the end of the connection. */
  private complete(request: Request, status: number, served = true): void {
    if (this.request !== request) return;
    this.request = undefined;
    request.queue.clear();
    if (this.closed) return;
    // One write for both: the web server gets the end in one segment.
    this.send(Buffer.concat([encodeRecord(TYPE.STDOUT, request.id), endRequest(request.id, status, STATUS.REQUEST_COMPLETE)]));
    // Kept unless this worker is needed for a connection already waiting:
    // closing right after END_REQUEST, the web server sees the close before
    // it reuses the connection.
    if (request.keep && !stopping && !this.peerEnded) {
      if (served) this.awaitHeader();
    } else {
      this.end();
      // Bounds the wait for a client that does not take the end.
      if (served) this.awaitHeader();
    }
  }

  private send(bytes: Uint8Array): void {
    if (this.closed || !this.socket) return;
    if (this.queue.length === 0) {
      const written = this.socket.write(bytes);
      if (written >= bytes.length) return;
      bytes = bytes.subarray(Math.max(written, 0));
    }
    this.queue.push(bytes);
    this.queued += bytes.length;
  }

  /** Resolves when everything sent so far has been taken by the socket. */
  private writable(): Promise<void> {
    if (this.queue.length === 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => (this.drained = resolve));
  }

  onDrain(): void {
    while (this.queue.length > 0 && this.socket && !this.closed) {
      const head = this.queue[0];
      const written = this.socket.write(head);
      if (written < head.length) {
        this.queue[0] = head.subarray(Math.max(written, 0));
        this.queued -= Math.max(written, 0);
        return;
      }
      this.queue.shift();
      this.queued -= head.length;
    }
    if (this.ending) this.socket?.end();
    const resolve = this.drained;
    this.drained = undefined;
    resolve?.();
  }

  /** Closes once what is queued has been written. */
  private end(): void {
    this.ending = true;
    if (this.queue.length === 0) this.socket?.end();
  }

  /**
   * The web server closed its side. An idle connection, or one in a
   * request's header, is simply over. With a program running, its stdin
   * ends at once. In the middle of the body the request is aborted (the
   * FastCGI spec, 5.4: a web server aborts a request by closing the
   * connection): our side closes, and onClose ends the program. After the
   * whole body a client that only half-closed may still read the answer,
   * so the program goes on; if the peer has gone, the first write of its
   * output fails, the connection closes, and onClose ends it then.
   */
  onEnd(): void {
    this.peerEnded = true;
    const request = this.request;
    if (!request?.proc) {
      if (this.reader.partial > 0 || request) gatewayLog(this.options, "fastcgi", "connection ended in a request's header");
      this.socket?.end();
      return;
    }
    if (request.inputEnded) {
      // The whole body came: what waits in its queue still goes to the program, which then reads EOF.
      if (!request.flushing) endInput(request.proc);
      return;
    }
    request.queue.clear();
    endInput(request.proc);
    request.endInput();
    gatewayLog(this.options, "fastcgi", `connection closed by the web server in request ${request.id}'s body: the request is aborted`);
    this.socket?.end();
  }

  onClose(): void {
    if (this.closed) return;
    this.closed = true;
    live.delete(this);
    clearTimeout(this.timer);
    const resolve = this.drained;
    this.drained = undefined;
    resolve?.();
    this.request?.endInput();
    if (this.request?.spool) closeSpool(this.request.spool);
    this.request?.queue.clear();
    const proc = this.request?.proc;
    if (!proc) return this.finish();
    // Nobody is left to read the answer: EOF on its input, TERM, then KILL.
    endInput(proc);
    if (proc.exitCode === null && proc.signalCode === null) endProgram(proc);
    void proc.exited.finally(() => this.finish());
  }
}

/** EOF on the program's stdin (if it is not there already). */
function endInput(proc: NonNullable<Request["proc"]>): void {
  if (typeof proc.stdin !== "object") return; // a spooled body: a file, not a pipe
  try {
    const ended = proc.stdin.end();
    if (ended instanceof Promise) ended.catch(() => {});
  } catch {
    // already ended, or the program has gone
  }
}
