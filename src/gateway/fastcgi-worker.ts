// FastCGI in a pool worker, which serves one connection at a time: served
// with blocking calls in the worker's thread, as SCGI's worker path is,
// not on Bun's loop. Records are read by read(2) into one reused buffer;
// the body goes to the CGI's stdin pipe by write(2); the output is spliced
// (fastcgi-output.ts); poll(2) waits for the connection, the stdin pipe,
// and between requests on a kept connection the master and the listener.
// No socket adoption, no timer, no promise per request: each cost CPU a
// pool worker's request does not need (docs/BENCHMARKS.md). The classic
// server (-f), many connections on one loop, keeps FastCgiHandler
// (fastcgi.ts); the two answer every record the same way.
import type { GatewayOptions } from "../options.ts";
import {
  close,
  EAGAIN,
  EINTR,
  exitedStatus,
  isReadable,
  pipe,
  pipeBytes,
  pipeSize,
  pidfdOpen,
  poll,
  POLLIN,
  POLLOUT,
  pushPending,
  readSome,
  sendSome,
  setPipeSize,
  strerror,
  writeSome,
} from "../system/libc.ts";
import { nextTick } from "../system/signals.ts";
import { BAD_GATEWAY, bodyOverLimit, gatewayLog, HEADER_TIMEOUT_MS, type CgiSource } from "../request/cgi.ts";
import type { Variable } from "../request/variables.ts";
import { HOLD_BYTES, QUEUE_LIMIT } from "./fastcgi.ts";
import { endProgram, startProgram, type Cgi } from "./cgi-process.ts";
import { BodyQueue, closeSpool, spoolFor, spoolRecord, type BodySpool } from "./body-spool.ts";
import { spliceOutput } from "./fastcgi-output.ts";
import { graceOver, KEPT_HEADER_MS, keptVerdict } from "./kept.ts";
import { encodeRecord, endRequest, gatherParams, handleRecord, RecordReader, STATUS, TYPE, type ResponderSteps } from "../request/fastcgi-records.ts";

/** The pool's descriptors a kept connection watches between requests, and how long a leaving worker's may last. */
export interface WorkerFds {
  /** The listener: a kept connection gives way when another connection waits there (kept.ts). */
  listener: number;
  /** The master's control socket: a byte (retire, leave) or its end, read by the worker after the connection. */
  control: number;
  /** Whether what waits there ends this worker (retire, leave, the master's end) rather than asks of it in passing (reopen the log). */
  ends(): boolean;
  /** --grace: how long a leaving worker's kept connection may go on carrying requests. */
  graceMs: number;
}

/** While the body waits for a program that reads slowly, how often its output pipes are looked at (full: it waits to write). */
const STALL_CHECK_MS = 10;
/** How often a kept connection between requests looks at the listener, and whether it has been quiet long enough. */
const LISTENER_CHECK_MS = 50;

/** One read of the connection; records are copied out of it (fastcgi-records.ts). */
const readBuffer = new Uint8Array(64 * 1024);
// struct pollfd { int fd; short events; short revents; } as two int32 (little-endian), up to 4.
const pollfds = new Int32Array(8);

interface Job {
  id: number;
  keep: boolean;
  params: Uint8Array[];
  paramsSize: number;
  /** No CONTENT_LENGTH (Apache's chunked body): the body is spooled whole before the program starts. */
  spool: BodySpool | undefined;
  /** The end of PARAMS came: the program runs, or its answer has been sent, or its body is being spooled. */
  started: boolean;
  proc: Cgi | undefined;
  /** The program's pidfd, opened as it starts (before Bun can reap it): its exit ends the output. */
  pidfd: number | undefined;
  /** Our end of the program's stdin pipe, non-blocking; undefined once closed (EOF to it). */
  stdin: number | undefined;
  /** Body bytes the program has not taken yet, in order (past 256 KiB, on disk). */
  pending: BodyQueue;
  /** Body bytes received (streamed), bounded by --max-body. */
  received: number;
  /** The empty STDIN record came (or the request is over): the program's output, held until then, may go. */
  inputEnded: boolean;
  /** The program waits to write (its output is held): the body is taken in (to disk) rather than paused. */
  stalled: boolean;
  /** Read ends of the program's stdout and stderr, until the output is spliced. */
  pipes: { stdout: number; stderr: number } | undefined;
}

let stopping = false;
let current: FastCgiConnection | undefined;

/** The worker drains or leaves: the connection in hand closes once quiet (kept.ts). */
export function stopWorkerConnection(): void {
  stopping = true;
  current?.stop();
}

/**
 * Serves one FastCGI connection a pool worker accepted, to its end: a
 * descriptor it owns, non-blocking (accept4's SOCK_NONBLOCK): a full socket
 * must not block a send, nor an empty one a read.
 */
export async function serveFastCgiDescriptor(fd: number, options: GatewayOptions, source: CgiSource, maxConns: number, pool: WorkerFds): Promise<void> {
  const connection = new FastCgiConnection(fd, options, source, maxConns, pool);
  current = connection;
  try {
    await connection.serve();
  } finally {
    current = undefined;
  }
}

class FastCgiConnection {
  private readonly reader = new RecordReader();
  private request: Job | undefined;
  private closed = false;
  /** No further request: close once what is queued has gone. */
  private ending = false;
  /** The web server closed its side (EOF). */
  private peerEnded = false;
  /** Not reading the connection: the program has not taken the body sent so far. */
  private paused = false;
  /** Output is being spliced: what is sent waits for the splice loop, which sends it between records. */
  private splicing = false;
  /** Bytes waiting for the connection, in order, and how many. */
  private out: Uint8Array[] = [];
  private queued = 0;
  /** When the connection is dropped unless something happens first, and the -v line saying why. */
  private deadline = Infinity;
  private why = "";
  /** When the last request ended (undefined: none yet, the connection is not kept). */
  private lastEnd: number | undefined;
  /** When a byte last came or a request last ended (the accept, at first). */
  private quietSince = Date.now();
  /** Since when this connection has been leaving (its worker retires): it closes once quiet. */
  private leavingSince: number | undefined;
  /** Since when the next header has been hurried (another connection waits, or leaving). */
  private hurrySince: number | undefined;

  constructor(
    private readonly fd: number,
    private readonly options: GatewayOptions,
    private readonly source: CgiSource,
    /** FCGI_MAX_CONNS and FCGI_MAX_REQS for GET_VALUES. */
    private readonly maxConns: number,
    private readonly pool: WorkerFds,
  ) {}

  async serve(): Promise<void> {
    try {
      this.awaitHeader();
      while (!this.closed) {
        const request = this.request;
        if (this.ending && this.out.length === 0) break;
        if (request?.proc && request.inputEnded && request.pipes && !this.ending) await this.output(request, request.proc, request.pipes);
        else await this.wait();
      }
    } catch (e) {
      // A bug must cost this connection only, not the worker.
      this.drop(`internal error: ${(e as Error).message}`);
    }
    await this.finish();
  }

  /** This process is stopping: the connection closes once quiet, after what has come on it (kept.ts). */
  stop(): void {
    this.leavingSince ??= Date.now();
  }

  /** One wait for what can go on: input, output, the program taking its body, the master, the listener, a deadline. */
  private async wait(): Promise<void> {
    const request = this.request;
    let count = 0;
    const watch = (fd: number, events: number) => {
      pollfds[2 * count] = fd;
      pollfds[2 * count + 1] = events;
      return count++;
    };
    const reading = !this.paused && !this.peerEnded && !this.ending;
    const connAt = watch(this.fd, (reading ? POLLIN : 0) | (this.out.length > 0 ? POLLOUT : 0));
    const stdinAt = request?.stdin !== undefined && request.pending.size > 0 ? watch(request.stdin, POLLOUT) : -1;
    // Kept, between two requests (or in the next one's header); or not yet in one while leaving.
    const between = (this.lastEnd !== undefined || this.leavingSince !== undefined) && !request?.started && !this.ending;
    const controlAt = between && this.leavingSince === undefined ? watch(this.pool.control, POLLIN) : -1;
    const now = Date.now();
    let timeout = this.deadline - now;
    const stallCheck = this.paused && request?.pipes !== undefined && !request.stalled;
    if (stallCheck) timeout = Math.min(timeout, STALL_CHECK_MS);
    if (between) timeout = Math.min(timeout, LISTENER_CHECK_MS);
    const ready = poll(pollfds, count, timeout === Infinity ? -1 : Math.max(0, Math.ceil(timeout)));
    if (ready === -EINTR) return nextTick(); // a signal: its handler runs (a drain stops this connection)
    if (ready < 0) throw new Error(`poll: ${strerror(-ready)}`);
    const revents = (i: number) => (i >= 0 ? pollfds[2 * i + 1] >>> 16 : 0);
    if (revents(controlAt)) {
      // The master's word, read by the worker once this connection is over: retire, leave or its
      // end stop keeping connections; a reopen only ends this one. Either way it closes once quiet.
      if (this.pool.ends()) stopping = true;
      this.stop();
    }
    if (between && this.yieldKept()) return;
    if (stallCheck && request.pipes) {
      // Over half full counts: pages written in part leave a full pipe short of its size.
      const full = (fd: number) => pipeBytes(fd) > pipeSize(fd) / 2;
      if (full(request.pipes.stdout) || full(request.pipes.stderr)) {
        request.stalled = true;
        this.paused = false;
      }
    }
    if (revents(connAt) & POLLOUT) this.flush();
    if (revents(stdinAt) && request) this.feed(request);
    if (reading && revents(connAt) & ~POLLOUT) this.input();
    if (ready === 0 && Date.now() >= this.deadline) this.drop(this.why);
  }

  /** Between requests: closed once quiet, or its header hurried, when others wait or it leaves (kept.ts). True: it closes. */
  private yieldKept(): boolean {
    const now = Date.now();
    const verdict = keptVerdict({
      now,
      quietSince: this.quietSince,
      idle: this.request === undefined && this.reader.partial === 0 && this.out.length === 0,
      leavingSince: this.leavingSince,
      othersWait: () => isReadable(this.pool.listener),
      hurrySince: this.hurrySince,
    });
    if (verdict === undefined) return false;
    if ("close" in verdict) {
      gatewayLog(this.options, "fastcgi", verdict.close);
      this.end();
      return true;
    }
    if (this.hurrySince === undefined) {
      this.hurrySince = verdict.hurrySince;
      const by = verdict.hurrySince + KEPT_HEADER_MS;
      if (by < this.deadline) {
        this.deadline = by;
        this.why = verdict.why;
      }
    }
    return false;
  }

  /**
   * A request's header (BEGIN_REQUEST, PARAMS to the empty PARAMS) must
   * come within an absolute deadline from the accept, or from the end of
   * the previous request on a kept connection: HEADER_TIMEOUT_MS, or
   * --timeout when smaller. Bytes arriving do not extend it, or a client
   * dripping a byte at a time would hold the worker for ever.
   */
  private awaitHeader(): void {
    this.deadline = Date.now() + Math.min(HEADER_TIMEOUT_MS, this.options.timeoutMs ?? Infinity);
    this.why = this.ending ? "connection timed out" : "no complete request in time";
  }

  /** While a program runs, only --timeout applies: every byte moved either way restarts it. */
  private touch(): void {
    if (!this.request?.proc) return; // waiting for a header: its deadline does not move
    const ms = this.options.timeoutMs;
    this.deadline = ms === undefined ? Infinity : Date.now() + ms;
    this.why = "connection timed out";
  }

  /** Ends the connection for a reason a -v line gives: its program (if any) goes too. */
  private drop(why: string): void {
    if (this.closed) return;
    gatewayLog(this.options, "fastcgi", why);
    this.request?.proc?.kill("SIGKILL");
    this.closeConnection();
  }

  private closeConnection(): void {
    if (this.closed) return;
    this.closed = true;
    close(this.fd);
  }

  /** What the connection has: records, its end, or an error (the web server has gone). */
  private input(): void {
    const n = readSome(this.fd, readBuffer);
    if (n === -EAGAIN || n === -EINTR) return;
    if (n < 0) return this.closeConnection(); // reset: nobody is left to answer; finish() ends the program
    if (n === 0) return this.onEnd();
    this.quietSince = Date.now();
    this.touch();
    const records = this.reader.push(readBuffer.subarray(0, n));
    if ("error" in records) return this.drop(records.error);
    for (const record of records) {
      const error = handleRecord(record, this.steps);
      if (error) return this.drop(error);
      if (this.queued > QUEUE_LIMIT) return this.drop(`the web server does not read its replies: over ${QUEUE_LIMIT / 1024} KiB wait`);
      if (this.closed || this.ending) return;
    }
  }

  /** The protocol's rules are fastcgi-records.ts's; these are this connection's steps. */
  private readonly steps: ResponderSteps = {
    current: () => this.request?.id,
    maxConns: () => this.maxConns,
    send: (bytes) => this.send(bytes),
    log: (line) => gatewayLog(this.options, "fastcgi", line),
    end: () => this.end(),
    begin: (id, keep) => {
      this.request = { id, keep, params: [], paramsSize: 0, spool: undefined, started: false, proc: undefined, pidfd: undefined, stdin: undefined, pending: new BodyQueue(), received: 0, inputEnded: false, stalled: false, pipes: undefined };
    },
    abort: () => this.abort(this.request!),
    params: (content) => this.params(this.request!, content),
    stdin: (content) => this.stdin(this.request!, content),
  };

  private params(request: Job, content: Uint8Array): string | undefined {
    if (request.started) return "PARAMS after the end of PARAMS";
    const gathered = gatherParams(request, content);
    if (typeof gathered !== "object") return gathered;
    const { variables, streams } = gathered;
    request.started = true;
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
    this.deadline = Date.now() + Math.min(HEADER_TIMEOUT_MS, this.options.timeoutMs ?? Infinity);
    this.why = "connection timed out in the body";
  }

  /** The program, its stdin a pipe of ours (the body streams in), the spooled body's file, or nothing ("ignore"). */
  private run(request: Job, variables: Variable[], stdin: "pipe" | "ignore" | number): void {
    const ends = outputPipes();
    const input = stdin === "pipe" ? pipe("write") : undefined;
    let proc: ReturnType<typeof startProgram>;
    try {
      proc = startProgram(this.source, variables, this.options, input ? input[0] : stdin, ends.child, "blocking");
    } finally {
      close(ends.child.stdout); // the program has its own
      close(ends.child.stderr);
      if (input) close(input[0]);
    }
    if ("answer" in proc) {
      closePipes(ends.ours);
      if (input) close(input[1]);
      this.send(encodeRecord(TYPE.STDOUT, request.id, proc.answer));
      this.complete(request, proc.answer === BAD_GATEWAY ? 1 : 0);
      return;
    }
    request.proc = proc;
    try {
      request.pidfd = pidfdOpen(proc.pid);
    } catch {
      // no descriptor left: the output ends with its pipes, and the exit is awaited through Bun
    }
    request.pipes = ends.ours; // held until the body has ended: the pipes hold the output meanwhile
    request.stdin = input?.[1];
    this.touch();
  }

  private stdin(request: Job, content: Uint8Array): string | undefined {
    if (request.spool) return this.spoolStdin(request, content);
    if (!request.started) return "STDIN before the end of PARAMS";
    if (request.inputEnded) return undefined; // after its end (or an abort): nothing more goes to the program
    if (content.length === 0) {
      request.inputEnded = true;
      if (request.pending.size === 0) closeStdin(request);
      return undefined;
    }
    request.received += content.length;
    // More than its CONTENT_LENGTH, which was within the limit: not a web server's doing.
    const over = bodyOverLimit(this.options, request.received, "received");
    if (over) return over;
    if (request.stdin === undefined) return undefined; // the program could not run, or stopped reading
    request.pending.push(content);
    this.feed(request);
    if (request.pending.size === 0) return undefined;
    // The program reads slower than the web server sends: stop reading until
    // it catches up. Unless its output is held and it waits to write (a CGI
    // that answers before it reads): then the web server waits for us to take
    // the body, so it is taken in, past 256 KiB into a file (BodyQueue).
    if (!request.stalled) this.paused = true;
    return undefined;
  }

  /** Body bytes into the program's stdin, as many as it takes now; its EOF once the body has ended and all went. */
  private feed(request: Job): void {
    let moved = false;
    for (let head = request.pending.head(); request.stdin !== undefined && head; head = request.pending.head()) {
      const n = writeSome(request.stdin, head);
      if (n === -EAGAIN) break;
      if (n === -EINTR) continue;
      if (n < 0) {
        // The program exited without reading all its input: the rest is dropped.
        closeStdin(request);
        break;
      }
      moved = true;
      request.pending.take(n);
    }
    if (moved) this.touch();
    if (request.pending.size === 0 || request.stdin === undefined) {
      if (request.stdin === undefined) request.pending.clear();
      this.paused = false;
      if (request.inputEnded) closeStdin(request);
    }
  }

  /**
   * A record of a body without CONTENT_LENGTH, into the spool; the empty one
   * starts the program. Past --max-body the rest is dropped (within what is
   * left of the body's deadline), then 413 and END_REQUEST (body-spool.ts).
   */
  private spoolStdin(request: Job, content: Uint8Array): string | undefined {
    const spool = request.spool!;
    const step = spoolRecord(spool, content, request.id, this.options, (bytes) => this.send(bytes));
    if ("more" in step) this.awaitBody();
    if (!("run" in step || "refused" in step)) return undefined;
    request.spool = undefined;
    request.inputEnded = true;
    if ("refused" in step) return void this.complete(request, 0);
    try {
      this.run(request, step.run.variables, step.run.stdin);
    } finally {
      closeSpool(spool); // the program has its own
    }
    return undefined;
  }

  private abort(request: Job): void {
    if (!request.proc) {
      // Not started yet: nothing to kill, the request just ends (and the
      // header deadline runs on: aborting is no way to restart it).
      const spooled = request.spool;
      if (spooled) closeSpool(spooled);
      request.spool = undefined;
      request.inputEnded = true;
      // Aborted while its body was spooled: the header was complete, its deadline over.
      this.complete(request, 0, spooled !== undefined);
      return;
    }
    gatewayLog(this.options, "fastcgi", `request ${request.id} aborted by the web server`);
    request.inputEnded = true;
    closeStdin(request); // EOF too: a child of the program reading its stdin must not keep the output open
    endProgram(request.proc);
  }

  /** After the body: the program's output spliced into the connection until both pipes end, then its end. */
  private async output(request: Job, proc: Cgi, pipes: { stdout: number; stderr: number }): Promise<void> {
    request.pipes = undefined;
    this.splicing = true;
    let end: Awaited<ReturnType<typeof spliceOutput>>;
    try {
      end = await spliceOutput(
        { conn: this.fd, stdout: pipes.stdout, stderr: pipes.stderr, requestId: request.id, pidfd: request.pidfd ?? -1 },
        {
          timeoutMs: this.options.timeoutMs,
          moved: () => this.touch(),
          takeQueued: () => {
            const queued = this.out;
            this.out = [];
            this.queued = 0;
            return queued;
          },
          watchInput: () => !this.peerEnded && !this.paused,
          input: () => this.input(),
          stdin: () => (request.stdin !== undefined && request.pending.size > 0 ? request.stdin : -1),
          feed: () => this.feed(request),
          over: () => this.closed,
        },
      );
    } catch (e) {
      end = { error: `internal error: ${(e as Error).message}` };
    } finally {
      this.splicing = false;
      closePipes(pipes); // a program still writing gets EPIPE
    }
    if (end === "timeout") return this.drop("connection timed out");
    if (typeof end === "object") return this.drop(end.error);
    if (end === "gone") return this.closeConnection(); // the web server has gone: finish() ends the program
    // Ended already (as a CGI has once its output has): END_REQUEST now, with the last bytes. Else
    // what is held back goes first, and the end waits for its exit.
    let status = exitedStatus(proc.pid);
    if (status === undefined) {
      pushPending(this.fd);
      const exited = await this.awaitExit(request, proc);
      if (exited === undefined) return;
      status = exited;
    }
    this.complete(request, status);
  }

  /**
   * A program that closed its output and runs on: its exit, with the
   * connection still read as while it wrote (an ABORT_REQUEST ends the
   * program; --timeout drops the connection, and finish() ends the
   * program). Undefined when the request ended otherwise.
   */
  private async awaitExit(request: Job, proc: Cgi): Promise<number | undefined> {
    // Bun may have reaped it already (its loop ran since): then its status is known.
    const pidfd = request.pidfd;
    if (pidfd === undefined || proc.exitCode !== null || proc.signalCode !== null) return await proc.exited;
    const fds = new Int32Array(4);
    for (;;) {
      const left = this.options.timeoutMs === undefined ? Infinity : this.deadline - Date.now();
      if (left <= 0) {
        this.drop("connection timed out");
        return undefined;
      }
      // After the web server's end (a half-close may still want END_REQUEST) only the exit is awaited.
      fds.set([pidfd, POLLIN, this.fd, POLLIN]);
      const ready = poll(fds, this.peerEnded ? 1 : 2, left === Infinity ? -1 : Math.ceil(left));
      if (ready === -EINTR) {
        await nextTick(); // a signal: its handler runs
        continue;
      }
      if (ready < 0) throw new Error(`poll: ${strerror(-ready)}`);
      if (fds[1]! >>> 16) break; // it has exited
      if (fds[3]! >>> 16) {
        this.input();
        if (this.closed || this.request !== request) return undefined;
      }
    }
    return await proc.exited;
  }

  /** The empty STDOUT, END_REQUEST, then the next request or the end of the connection. */
  private complete(request: Job, status: number, served = true): void {
    if (this.request !== request) return;
    this.request = undefined;
    if (request.stdin !== undefined) closeStdin(request);
    closePidfd(request);
    if (this.closed) return;
    // One write for both: the web server gets the end in one segment.
    this.send(Buffer.concat([encodeRecord(TYPE.STDOUT, request.id), endRequest(request.id, status, STATUS.REQUEST_COMPLETE)]));
    // Kept even when this worker leaves: what the web server may already be sending on it is
    // served, and it closes once quiet (kept.ts); past the grace, right after this END_REQUEST.
    const now = Date.now();
    if (stopping) this.stop();
    if (request.keep && !this.peerEnded && !graceOver(this.leavingSince, this.pool.graceMs, now)) {
      this.lastEnd = this.quietSince = now;
      // An abort before the program ran restarts neither deadline.
      if (served) {
        this.awaitHeader();
        this.hurrySince = undefined;
      }
    } else {
      this.end();
      // Bounds the wait for a client that does not take the end.
      if (served) this.awaitHeader();
    }
  }

  private send(bytes: Uint8Array): void {
    if (this.closed) return;
    this.out.push(bytes);
    this.queued += bytes.length;
    if (!this.splicing) this.flush();
  }

  /** What is queued, as much as the connection takes now. */
  private flush(): void {
    while (this.out.length > 0 && !this.closed) {
      const head = this.out[0];
      const sent = sendSome(this.fd, head, false);
      if (sent === -EAGAIN) return;
      if (sent === -EINTR) continue;
      if (sent < 0) return this.closeConnection(); // the web server has gone
      this.queued -= sent;
      if (sent < head.length) this.out[0] = head.subarray(sent);
      else this.out.shift();
    }
  }

  /** Closes once what is queued has been written. */
  private end(): void {
    this.ending = true;
  }

  /**
   * The web server closed its side. An idle connection, or one in a
   * request's header, is simply over. With a program running, its stdin
   * ends at once. In the middle of the body the request is aborted (the
   * FastCGI spec, 5.4: a web server aborts a request by closing the
   * connection): our side closes, and the program is ended. After the
   * whole body a client that only half-closed may still read the answer,
   * so the program goes on; if the peer has gone, the first write of its
   * output fails, the connection closes, and the program is ended then.
   */
  private onEnd(): void {
    this.peerEnded = true;
    const request = this.request;
    if (!request?.proc) {
      if (this.reader.partial > 0 || request) gatewayLog(this.options, "fastcgi", "connection ended in a request's header");
      return this.end();
    }
    if (request.inputEnded) {
      // The whole body came: what waits in its queue still goes to the program (feed closes its stdin after).
      if (request.pending.size === 0) closeStdin(request);
      return;
    }
    closeStdin(request);
    request.inputEnded = true;
    gatewayLog(this.options, "fastcgi", `connection closed by the web server in request ${request.id}'s body: the request is aborted`);
    this.end();
  }

  /** The connection is over: closed, and a program still running told to stop (EOF, TERM, then KILL) and waited for. */
  private async finish(): Promise<void> {
    this.closeConnection();
    const request = this.request;
    this.request = undefined;
    if (!request) return;
    if (request.spool) closeSpool(request.spool);
    if (request.pipes) closePipes(request.pipes);
    closeStdin(request);
    closePidfd(request);
    const proc = request.proc;
    if (!proc) return;
    if (proc.exitCode === null && proc.signalCode === null) endProgram(proc);
    await proc.exited;
  }
}

/** EOF on the program's stdin (if it is not there already); what it had not taken is dropped. */
function closeStdin(request: Job): void {
  if (request.stdin !== undefined) close(request.stdin);
  request.stdin = undefined;
  request.pending.clear();
}

function closePidfd(request: Job): void {
  if (request.pidfd !== undefined) close(request.pidfd);
  request.pidfd = undefined;
}

/**
 * The program's stdout and stderr as our own pipes, to splice from: `child`
 * its write ends (closed here once it has them), `ours` the read ends,
 * non-blocking. Stdout grows to HOLD_BYTES: it holds the output until the
 * body has ended.
 */
function outputPipes(): { child: { stdout: number; stderr: number }; ours: { stdout: number; stderr: number } } {
  const [stdout, stdoutChild] = pipe("read");
  const [stderr, stderrChild] = pipe("read");
  setPipeSize(stdout, HOLD_BYTES);
  return { child: { stdout: stdoutChild, stderr: stderrChild }, ours: { stdout, stderr } };
}

function closePipes(pipes: { stdout: number; stderr: number }): void {
  close(pipes.stdout);
  close(pipes.stderr);
}
