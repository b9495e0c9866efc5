// FastCGI in a pool worker, which serves one connection at a time: the
// blocking engine of the responder (request/fastcgi-responder.ts holds every
// rule; this does the I/O). Records are read by read(2) into one reused
// buffer; the body goes to the CGI's stdin pipe by write(2); the output is
// spliced (fastcgi-output.ts) once the body has ended; poll(2) waits for the
// connection, the stdin pipe and the master's word (in a request too: a
// stopping worker's END_REQUEST carries the end), and between requests on a
// kept connection the listener is looked at. No socket adoption, no timer,
// no promise per record: each would cost CPU a pool worker's request does not need.
import type { GatewayOptions } from "../options.ts";
import { errorText as message } from "../fatal.ts";
import { close, pipeBytes, pipeSize, tryRead, tryWrite } from "../system/fd.ts";
import { EAGAIN, EINTR, strerror } from "../system/ffi.ts";
import { isReadable, POLLIN, POLLOUT, tryPoll } from "../system/poll.ts";
import { pidfdOpen } from "../system/process.ts";
import { pushPending, SHUT_WR, shutdown } from "../system/socket.ts";
import { nextTick } from "../system/signals.ts";
import type { CgiSource, Variable } from "../request/cgi.ts";
import { FastCgiResponder } from "../request/fastcgi-responder.ts";
import { SendClock, type BodyKind, type ResponderEffects } from "../request/fastcgi-engine.ts";
import { describeCgi, endProgram, startProgram } from "./cgi-process.ts";
import { closePidfd, type Job, type WorkerFds } from "./fastcgi-job.ts";
import { BodyQueue, SpoolFile } from "./body-spool.ts";
import { SendQueue } from "./send-queue.ts";
import { stderrLog } from "./cgi-stderr.ts";
import { awaitExit, closePipes, outputPipes, spliceOutput, type OutputEnd, type OutputHooks, type Pipes } from "./fastcgi-output.ts";

/** While the body waits for a program that reads slowly, how often its output pipes are looked at (full: it waits to write). */
const STALL_CHECK_MS = 10;
/** How often a kept connection between requests looks at the listener, and whether it has been quiet long enough. */
const LISTENER_CHECK_MS = 50;

/** One read of the connection; records are copied out of it (fastcgi-records.ts). */
const readBuffer = new Uint8Array(64 * 1024);
// struct pollfd { int fd; short events; short revents; } as two int32 (little-endian), up to 4.
const pollfds = new Int32Array(8);

/** How this worker leaves once told: it stops (a drain) or retires (LEAVE: the service goes on). */
let leaving: "stop" | "retire" | undefined;
let current: BlockingConnection | undefined;

/** The connection in hand, and one taken after, leave as the worker does (fastcgi-engine.ts keptVerdict). */
export function leaveWorkerConnection(how: "stop" | "retire"): void {
  if (leaving !== "stop") leaving = how;
  current?.leave();
}

/**
 * Serves one FastCGI connection a pool worker accepted, to its end: a
 * descriptor it owns, non-blocking (accept4's SOCK_NONBLOCK): a full socket
 * must not block a send, nor an empty one a read.
 */
export async function serveFastCgiDescriptor(fd: number, options: GatewayOptions, source: CgiSource, maxConns: number, pool: WorkerFds): Promise<void> {
  const connection = new BlockingConnection(fd, options, source, maxConns, pool);
  current = connection;
  try {
    await connection.serve();
  } finally {
    current = undefined;
  }
}

class BlockingConnection implements ResponderEffects, OutputHooks {
  private readonly responder: FastCgiResponder;
  private job: Job | undefined;
  /** Body bytes the program has not taken yet, in order (past what BodyQueue keeps in memory, on disk). */
  private readonly pending = new BodyQueue();
  readonly spoolFile = new SpoolFile();
  private closed = false;
  /** Not reading the connection: the program has not taken the body sent so far. */
  private paused = false;
  /** Output is being spliced: what is sent waits for the splice loop, which sends it between records. */
  private splicing = false;
  /** Bytes waiting for the connection, in order, and how many; whether the connection's end follows them. */
  private readonly out = new SendQueue();
  private lastQueued = false;
  readonly sending = new SendClock();
  private readonly othersWait = () => isReadable(this.pool.listener);

  constructor(
    private readonly fd: number,
    private readonly options: GatewayOptions,
    private readonly source: CgiSource,
    maxConns: number,
    private readonly pool: WorkerFds,
  ) {
    this.responder = new FastCgiResponder({ options, maxConns, pool: true }, this, Date.now());
    if (leaving) this.leave();
  }

  async serve(): Promise<void> {
    try {
      // A connection just accepted mostly has its records already: read them before any poll.
      if (!this.responder.ending) this.input();
      while (!this.closed) {
        if (this.responder.ending && this.out.empty) break;
        const job = this.job;
        if (job?.pipes && job.bodyEnded && !this.responder.ending) await this.output(job, job.pipes);
        else await this.wait();
      }
    } catch (e) {
      // A bug must cost this connection only, not the worker.
      this.responder.drop(`internal error: ${message(e)}`);
    }
    await this.finish();
  }

  leave(): void {
    this.responder.leave(Date.now(), leaving === "retire");
  }

  /** The master's control socket, watched in every wait (a request's too) until the worker stops; -1 then. */
  control(): number {
    return leaving === "stop" ? -1 : this.pool.control;
  }

  /** The master's word, read here and acted on by the worker (a drain or a leave: leaveWorkerConnection). Heard during a
   * request, a stop's FIN goes with its END_REQUEST; between requests a stopped connection closes once quiet, a retired
   * one stays the web server's to close (fastcgi-engine.ts). */
  heard(): void {
    this.pool.hear();
  }

  /** One wait for what can go on: input, output, the program taking its body, the master, the listener, a deadline. */
  private async wait(): Promise<void> {
    const { responder, job } = this;
    let count = 0;
    const watch = (fd: number, events: number) => {
      pollfds[2 * count] = fd;
      pollfds[2 * count + 1] = events;
      return count++;
    };
    const reading = !this.paused && !responder.peerEnded && !responder.ending;
    const connAt = watch(this.fd, (reading ? POLLIN : 0) | (this.out.empty ? 0 : POLLOUT));
    const stdinAt = job?.stdin !== undefined && this.pending.size > 0 ? watch(job.stdin, POLLOUT) : -1;
    const between = responder.between;
    const controlAt = this.control() >= 0 ? watch(this.pool.control, POLLIN) : -1;
    let timeout = (responder.deadline()?.at ?? Infinity) - Date.now();
    const stallCheck = this.paused && job?.pipes !== undefined && !job.stalled;
    if (stallCheck) timeout = Math.min(timeout, STALL_CHECK_MS);
    if (between && !responder.retiring) timeout = Math.min(timeout, LISTENER_CHECK_MS); // retired, the listener is not its
    const ready = tryPoll(pollfds, count, timeout === Infinity ? -1 : Math.max(0, Math.ceil(timeout)));
    if (ready === -EINTR) return nextTick(); // a signal: its handler runs (a drain stops this connection)
    if (ready < 0) throw new Error(`poll: ${strerror(-ready)}`);
    const revents = (i: number) => (i >= 0 ? pollfds[2 * i + 1] >>> 16 : 0);
    if (revents(controlAt)) this.heard();
    // What came on the connection first: a request that arrived in this wake-up is served, never closed on.
    if (reading && revents(connAt) & ~POLLOUT) this.input();
    if (between) {
      responder.keptCheck(Date.now(), this.othersWait);
      if (responder.ending) return;
    }
    if (stallCheck && job.pipes) {
      // Over half full counts: pages written in part leave a full pipe short of its size.
      const full = (fd: number) => pipeBytes(fd) > pipeSize(fd) / 2;
      if (full(job.pipes.stdout) || full(job.pipes.stderr)) {
        job.stalled = true;
        this.pause(false);
      }
    }
    if (revents(connAt) & POLLOUT) this.flush();
    if (revents(stdinAt)) this.feed();
    // Even while events keep coming: a body streamed without a pause must not outlast --request-timeout.
    responder.expire(Date.now());
  }

  /** What the connection has: records, its end, or an error (the web server has gone). */
  input(): void {
    const n = tryRead(this.fd, readBuffer);
    if (n === -EAGAIN || n === -EINTR) return;
    if (n < 0) return this.closeConnection(); // reset: nobody is left to answer; finish() ends the program
    if (n === 0) return this.responder.peerClosed();
    this.responder.input(readBuffer.subarray(0, n), Date.now());
  }

  private closeConnection(): void {
    if (this.closed) return;
    this.closed = true;
    this.responder.closed();
    close(this.fd);
  }

  send(bytes: Uint8Array, last = false): void {
    if (this.closed) return;
    this.out.push(bytes);
    this.lastQueued ||= last;
    if (!this.splicing) this.flush();
  }

  queued(): number {
    return this.out.size;
  }

  /** What is queued, as much as the connection takes now; the last bytes with the FIN in their segment (MSG_MORE,
   * then shutdown): the web server sees the end with them and sends no other request on the connection. */
  private flush(): void {
    if (this.closed) return;
    if (!this.out.flush(this.fd, this.lastQueued, this.sending)) return this.closeConnection(); // the web server has gone
    if (this.lastQueued && this.out.empty) shutdown(this.fd, SHUT_WR);
  }

  /** The program, its stdin a pipe of ours (the body streams in), the spooled body's file, or nothing. */
  start(variables: Variable[], stdin: BodyKind): Uint8Array | undefined {
    const ends = outputPipes(stdin === "pipe");
    const { input } = ends;
    const spooled = stdin === "spool" ? this.spoolFile.take() : "ignore";
    let proc: ReturnType<typeof startProgram>;
    try {
      proc = startProgram(this.source, variables, this.options, input ? input[0] : spooled, ends.child, "blocking");
    } finally {
      close(ends.child.stdout); // the program has its own
      close(ends.child.stderr);
      if (input) close(input[0]);
      if (typeof spooled === "number") close(spooled);
    }
    if ("answer" in proc) {
      closePipes(ends.ours);
      if (input) close(input[1]);
      return proc.answer;
    }
    // The program's own pidfd (posix_spawn's); one of ours only where Bun started it (an old libc).
    let pidfd = proc.pidfd;
    const ownPidfd = pidfd === undefined;
    try {
      pidfd ??= pidfdOpen(proc.pid);
    } catch {
      // no descriptor left: the output ends with its pipes, and the exit is awaited through Bun
    }
    // The pipes hold the output until the body has ended.
    this.job = { id: this.responder.requestId, proc, pidfd, ownPidfd, stdin: input?.[1], bodyEnded: stdin !== "pipe", stalled: false, pipes: ends.ours };
    return undefined;
  }

  writeBody(bytes: Uint8Array): void {
    const job = this.job;
    if (job?.stdin === undefined) return; // the program stopped reading
    this.pending.push(bytes);
    this.feed();
    if (this.pending.size === 0) return;
    // The program reads slower than the web server sends: stop reading until
    // it catches up. Unless its output is held and it waits to write (a CGI
    // that answers before it reads): then the web server waits for us to take
    // the body, so it is taken in, to a file past what BodyQueue keeps in memory.
    if (!job.stalled) this.pause(true);
  }

  endBody(drop: boolean): void {
    const job = this.job;
    if (!job) return;
    job.bodyEnded = true;
    if (drop || this.pending.size === 0) this.closeStdin(job);
  }

  /** Reading the connection stops (the program has not taken the body that came) or goes on; the body's deadline leaves that time out. */
  private pause(paused: boolean): void {
    if (paused === this.paused) return;
    this.paused = paused;
    if (paused) this.responder.body.pause(Date.now());
    else this.responder.body.resume(Date.now());
  }

  /** Body bytes into the program's stdin, as many as it takes now; its EOF once the body has ended and all went. */
  feed(): void {
    const job = this.job;
    if (!job) return;
    let moved = false;
    for (let head = this.pending.head(); job.stdin !== undefined && head; head = this.pending.head()) {
      const n = tryWrite(job.stdin, head);
      if (n === -EAGAIN) break;
      if (n === -EINTR) continue;
      if (n < 0) {
        // The program exited without reading all its input: the rest is dropped.
        this.closeStdin(job);
        break;
      }
      moved = true;
      this.pending.take(n);
    }
    if (moved) this.responder.moved(Date.now());
    if (this.pending.size === 0 || job.stdin === undefined) {
      this.pause(false);
      if (job.bodyEnded || job.stdin === undefined) this.closeStdin(job);
    }
  }

  /** EOF on the program's stdin (if it is not there already); what it had not taken is dropped, and the connection read again. */
  private closeStdin(job: Job): void {
    if (job.stdin !== undefined) close(job.stdin);
    job.stdin = undefined;
    this.pending.clear();
    this.pause(false);
  }

  stopProgram(): void {
    if (this.job) endProgram(this.job.proc);
  }

  program(): ReturnType<typeof describeCgi> | undefined {
    return this.job && describeCgi(this.job.proc);
  }

  end(): void {
    // serve() closes once what is queued has gone
  }

  drop(stop = false): void {
    if (!stop) this.job?.proc.kill("SIGKILL"); // else told to stop already; finish() waits for it
    this.closeConnection();
  }

  // The splice loop's hooks (fastcgi-output.ts).
  get timeoutMs(): number | undefined {
    return this.options.timeoutMs;
  }

  moved(): void {
    this.responder.moved(Date.now());
  }

  takeQueued(): Uint8Array[] {
    return this.out.take();
  }

  watchInput(): boolean {
    return !this.responder.peerEnded && !this.paused;
  }

  stdinFd(): number {
    const job = this.job;
    return job?.stdin !== undefined && this.pending.size > 0 ? job.stdin : -1;
  }

  over(): boolean {
    return this.closed;
  }

  dueAt(): number {
    return Math.min(this.responder.clock.deadline(this.options.requestTimeoutMs)?.at ?? Infinity, this.sending.due(this.options.sendTimeoutMs));
  }

  overdue(): void {
    this.responder.expire(Date.now());
  }

  answering(): void {
    this.responder.clock.answering();
  }

  /** After the body: the program's output spliced into the connection until both pipes end, then its end. */
  private async output(job: Job, pipes: Pipes): Promise<void> {
    job.pipes = undefined;
    // Ended by --request-timeout before its output went: what the pipes hold is dropped.
    let end: OutputEnd = this.responder.clock.cut ? "cut" : "done";
    this.splicing = end !== "cut";
    try {
      if (this.splicing) end = await spliceOutput({ conn: this.fd, stdout: pipes.stdout, stderr: pipes.stderr, stderrLog: stderrLog(this.options, job.proc), requestId: job.id, pidfd: job.pidfd ?? -1 }, this);
    } catch (e) {
      end = { error: `internal error: ${message(e)}` };
    } finally {
      this.splicing = false;
      closePipes(pipes); // a program still writing gets EPIPE
    }
    if (end === "cut") this.flush(); // a 504 goes now, not at the program's end
    if (end === "timeout") return this.responder.drop("connection timed out");
    if (typeof end === "object") return this.responder.drop(end.error);
    if (end === "gone") return this.closeConnection(); // the web server has gone: finish() ends the program
    // Its exit (a CGI's follows the end of its output), then END_REQUEST with the last bytes. Known
    // already when the splice saw it, or when Bun has reaped it (its loop ran since). Cut: its end is
    // awaited by proc.exited, which sends stop()'s KILL when it is due.
    const { proc, pidfd } = job;
    if (pidfd === undefined) pushPending(this.fd); // what is held back goes first: its exit comes through Bun
    const ended = end === "exited" || end === "cut" || pidfd === undefined || proc.exitCode !== null || proc.signalCode !== null;
    const exit = ended ? "exited" : await awaitExit(this.fd, pidfd, this, () => pushPending(this.fd));
    if (exit === "timeout") return this.responder.drop("connection timed out");
    if (exit === "gone") return;
    const status = await proc.exited;
    this.job = undefined;
    this.closeStdin(job);
    closePidfd(job);
    this.responder.exited(status, Date.now());
  }

  /** The connection is over: closed, and a program still running told to stop (EOF, TERM, then KILL) and waited for. */
  private async finish(): Promise<void> {
    this.closeConnection();
    this.spoolFile.close();
    const job = this.job;
    this.job = undefined;
    if (!job) return;
    if (job.pipes) closePipes(job.pipes);
    this.closeStdin(job);
    closePidfd(job);
    const { proc } = job;
    if (proc.exitCode === null && proc.signalCode === null) endProgram(proc);
    await proc.exited;
  }
}
