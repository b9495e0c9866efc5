// FastCGI on Bun's loop, as the classic server (-f) serves many connections
// at once: the evented engine of the responder (request/fastcgi-responder.ts
// holds every rule; this does the I/O). Bun's socket events feed the
// responder; the CGI's stdin is Bun's pipe writer, its output read as
// streams and sent as records at the pace the socket takes them; the
// responder's deadline is one timer.
import type { EventSocket, SocketEvents } from "../connection/events.ts";
import type { GatewayOptions } from "../options.ts";
import { errorText as message } from "../fatal.ts";
import { close } from "../system/fd.ts";
import { isReadable } from "../system/poll.ts";
import { fdOf } from "../net/listener.ts";
import type { CgiSource, Variable } from "../request/cgi.ts";
import { encodeRecord, MAX_CONTENT, TYPE } from "../request/fastcgi-records.ts";
import { FastCgiResponder } from "../request/fastcgi-responder.ts";
import { HOLD_BYTES, SendClock, type BodyKind, type ResponderEffects } from "../request/fastcgi-engine.ts";
import { describeCgi, endInput, endProgram, startProgram, type Cgi } from "./cgi-process.ts";
import { untilExit } from "./until-exit.ts";
import { logStream } from "./cgi-stderr.ts";
import { StderrBudget } from "../request/stderr-lines.ts";
import { BodyQueue, DiskLimit, SpoolFile } from "./body-spool.ts";

export { CLASSIC_MAX_CONNS } from "../request/fastcgi-engine.ts";

/** The request's program and what joins it to the connection. */
interface Job {
  id: number;
  proc: Cgi;
  /** The body has ended (or the request is over): the program's output, held until then, may go. */
  bodyEnded: boolean;
  /** Resolves when bodyEnded becomes true. */
  bodyEnd: Promise<void>;
  endBody: () => void;
  /** Output held to HOLD_BYTES: the program waits to write, so its body is taken in (to disk) rather than paused. */
  stalled: boolean;
  /** A write to the program's stdin Bun has yet to finish: its loop must run for it. */
  flushing: boolean;
}

function newJob(id: number, proc: Cgi, bodyEnded: boolean): Job {
  const { promise: bodyEnd, resolve } = Promise.withResolvers<void>();
  const job: Job = {
    id,
    proc,
    bodyEnded,
    bodyEnd,
    endBody: () => {
      job.bodyEnded = true;
      resolve();
    },
    stalled: false,
    flushing: false,
  };
  if (bodyEnded) resolve();
  return job;
}

/**
 * Connections alive in this process. When it is told to stop (the classic
 * server ends), a kept connection must not take new requests: idle ones
 * close now, busy ones after their request.
 */
const live = new Set<FastCgiHandler>();
let stopping = false;

/** This process stops: no kept connection takes another request. */
export function stopKeptConnections(): void {
  stopping = true;
  for (const handler of live) handler.stop();
}

const stream = (s: unknown) => (s instanceof ReadableStream ? s : undefined);

/** One FastCGI connection from Bun's listener (-f). */
export class FastCgiHandler implements SocketEvents, ResponderEffects {
  private socket: EventSocket | undefined;
  private readonly responder: FastCgiResponder;
  private job: Job | undefined;
  /** Body bytes waiting for Bun's write to the program to finish, in order (past what BodyQueue keeps in memory, on disk). */
  private readonly pending = new BodyQueue();
  readonly spoolFile = new SpoolFile();
  private closed = false;
  /** Stopping between requests with bytes Bun has not handed over yet: the responder is told once they are read. */
  private leaveAfterRead = false;
  /** The responder's deadline, as a timer set for `timerAt`. */
  private timer: Timer | undefined;
  private timerAt = Infinity;
  /** Bytes waiting for the socket to drain, in order, and how many. */
  private out: Uint8Array[] = [];
  private bytes = 0;
  readonly sending = new SendClock();
  /** One for every waiter: stdout's and stderr's forward() may both wait for the same drain. */
  private drained: PromiseWithResolvers<void> | undefined;
  private finish!: () => void;
  readonly done = new Promise<void>((resolve) => (this.finish = resolve));

  constructor(
    private readonly options: GatewayOptions,
    private readonly source: CgiSource,
    /** FCGI_MAX_CONNS and FCGI_MAX_REQS for GET_VALUES. */
    maxConns: number,
  ) {
    this.responder = new FastCgiResponder({ options, maxConns, pool: false }, this, Date.now());
  }

  attach(socket: EventSocket): void {
    this.socket = socket;
    live.add(this);
    if (stopping) this.stop();
    this.arm();
  }

  /**
   * This process is stopping: no further request on this connection. What
   * the web server has already sent is read first: Bun may run the signal's
   * handler before it hands over bytes that came in the same wake-up, and a
   * request already sent on an idle connection closed now would be lost
   * (nginx answers a POST 502). The responder hears of the leaving once they are read.
   */
  stop(): void {
    // In a request nothing closes now (its END_REQUEST ends the connection), and its body may be paused: told at once.
    const socket = this.socket;
    const between = socket !== undefined && this.responder.phase === "none" && !this.closed && !this.responder.over;
    this.leaveAfterRead = between && isReadable(fdOf(socket));
    if (this.leaveAfterRead) return;
    this.responder.leave(Date.now());
    this.arm(); // a header not yet whole is hurried now
  }

  /** The responder's deadline as the timer: set again only when it comes sooner; when it fires, asked again. */
  private arm(): void {
    if (this.closed) return;
    const due = this.responder.deadline();
    if (due === undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.timerAt = Infinity;
      return;
    }
    if (this.timer !== undefined && this.timerAt <= due.at) return;
    clearTimeout(this.timer);
    this.timerAt = due.at;
    this.timer = setTimeout(() => this.expire(), Math.max(0, due.at - Date.now()));
  }

  private expire(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    this.responder.expire(Date.now());
    this.arm();
  }

  onData(chunk: Uint8Array): void {
    try {
      this.responder.input(chunk, Date.now());
    } catch (e) {
      // A bug must cost this connection only, not the process and its other work; so does a held body past the limit.
      this.responder.drop(e instanceof DiskLimit ? e.message : `internal error: ${message(e)}`);
    }
    if (this.leaveAfterRead) this.stop();
    this.arm();
  }

  onEnd(): void {
    this.responder.peerClosed();
    this.arm();
  }

  send(bytes: Uint8Array): void {
    if (this.closed || !this.socket) return;
    if (this.out.length === 0) {
      const written = this.socket.write(bytes);
      if (written >= bytes.length) return;
      bytes = bytes.subarray(Math.max(written, 0));
      this.sending.blocked(Date.now()); // --send-timeout from now, unless the socket drains
      this.arm();
    }
    this.out.push(bytes);
    this.bytes += bytes.length;
  }

  queued(): number {
    return this.bytes;
  }

  /** Resolves when everything sent so far has been taken by the socket. */
  private writable(): Promise<void> {
    if (this.out.length === 0 || this.closed) return Promise.resolve();
    return (this.drained ??= Promise.withResolvers<void>()).promise;
  }

  onDrain(): void {
    while (this.out.length > 0 && this.socket && !this.closed) {
      const head = this.out[0];
      const written = this.socket.write(head);
      if (written > 0) this.sending.took();
      if (written < head.length) {
        this.out[0] = head.subarray(Math.max(written, 0));
        this.bytes -= Math.max(written, 0);
        this.sending.blocked(Date.now());
        return this.arm();
      }
      this.out.shift();
      this.bytes -= head.length;
    }
    this.sending.took();
    if (this.responder.ending) this.socket?.end();
    this.drained?.resolve();
    this.drained = undefined;
  }

  start(variables: Variable[], stdin: BodyKind): Uint8Array | undefined {
    const spooled = stdin === "spool" ? this.spoolFile.take() : "ignore";
    let proc: ReturnType<typeof startProgram>;
    try {
      proc = startProgram(this.source, variables, this.options, stdin === "pipe" ? "pipe" : spooled, undefined);
    } finally {
      if (typeof spooled === "number") close(spooled); // the program has its own
    }
    if ("answer" in proc) {
      this.spoolFile.programExited(); // no program has its body
      return proc.answer;
    }
    const job = newJob(this.responder.requestId, proc, stdin !== "pipe");
    this.job = job;
    // Its stderr in STDERR records, or under --cgi-stderr log into socket's log (cgi-stderr.ts).
    const errors = this.options.cgiStderr === "log" ? logStream(stream(proc.stderr), proc) : this.forward(stream(proc.stderr), TYPE.STDERR, job);
    const output = Promise.all([this.forward(stream(proc.stdout), TYPE.STDOUT, job), errors]);
    void Promise.all([proc.exited, output]).then(([status]) => {
      if (this.job !== job) return;
      this.job = undefined;
      this.pending.clear();
      this.spoolFile.programExited(); // its body's file, its stdin, has gone with it
      this.responder.exited(status, Date.now());
      this.arm();
    });
    return undefined;
  }

  writeBody(bytes: Uint8Array): void {
    const job = this.job;
    if (!job || typeof job.proc.stdin !== "object") return;
    if (!job.flushing) return this.give(job, bytes);
    this.pending.push(bytes);
    // The program reads slower than the web server sends: stop reading
    // until it catches up. Unless its output is held and it waits to write
    // (a CGI that answers before it reads): then the web server waits for
    // us to take the body, so it is taken in, to a file past what BodyQueue keeps in memory.
    if (!job.stalled) this.readBody(false);
  }

  endBody(drop: boolean): void {
    const job = this.job;
    if (!job) return;
    job.endBody();
    if (drop) this.pending.clear();
    if (drop || !job.flushing) endInput(job.proc);
  }

  /** Body bytes into the program's stdin; when Bun cannot write them at once, the next wait in `pending` until it has. */
  private give(job: Job, bytes: Uint8Array): void {
    const sink = job.proc.stdin;
    if (typeof sink !== "object") return;
    try {
      const written = sink.write(bytes);
      if (written instanceof Promise) written.catch(() => {});
      const flushed = sink.flush();
      if (!(flushed instanceof Promise)) return;
      job.flushing = true;
      const caughtUp = () => {
        job.flushing = false;
        this.pump(job);
      };
      flushed.then(caughtUp, caughtUp);
    } catch {
      // the program exited without reading all its input: the rest is dropped
      this.pending.clear();
    }
  }

  /** What waits in `pending` into the program's stdin until Bun must wait for the pipe again; all gone: EOF after the body's end, and reading on. */
  private pump(job: Job): void {
    if (this.job !== job) return;
    this.responder.moved(Date.now());
    for (let head = this.pending.head(); head && !job.flushing; head = this.pending.head()) {
      this.pending.take(head.length); // its bytes are not reused: Bun may keep them
      this.give(job, head);
    }
    if (job.flushing) return;
    if (job.bodyEnded) endInput(job.proc);
    this.readBody(true);
  }

  /** Reading the connection stops (the program has not taken the body that came) or goes on; the body's deadline leaves that time out. */
  private readBody(on: boolean): void {
    if (on) {
      this.socket?.resume();
      this.responder.body.resume(Date.now());
    } else {
      this.socket?.pause();
      this.responder.body.pause(Date.now());
    }
  }

  stopProgram(): void {
    if (this.job) endProgram(this.job.proc);
  }

  program(): ReturnType<typeof describeCgi> | undefined {
    return this.job && describeCgi(this.job.proc);
  }

  /** Closes once what is queued has been written. */
  end(): void {
    if (this.out.length === 0) this.socket?.end();
  }

  drop(stop = false): void {
    if (!stop) this.job?.proc.kill("SIGKILL"); // else told to stop already; onClose waits for it
    this.socket?.terminate();
  }

  /**
   * The program's stdout or stderr as STDOUT or STDERR records, at the
   * pace the socket takes them; held (up to HOLD_BYTES, then not read)
   * until the request's body has ended.
   */
  private async forward(output: ReadableStream<Uint8Array> | undefined, type: number, job: Job): Promise<void> {
    const held: Uint8Array[] = [];
    let heldBytes = 0;
    const budget = type === TYPE.STDERR ? new StderrBudget() : undefined; // what nginx logs is bounded as socket's log is
    const out = async (chunk: Uint8Array) => {
      for (let at = 0; at < chunk.length; at += MAX_CONTENT) {
        if (this.closed || this.responder.clock.cut) return; // --request-timeout ended it: the rest is dropped
        if (type === TYPE.STDOUT) this.responder.clock.answering();
        this.responder.moved(Date.now());
        this.send(encodeRecord(type, job.id, chunk.subarray(at, at + MAX_CONTENT)));
        await this.writable();
      }
    };
    const release = async () => {
      for (let chunk = held.shift(); chunk; chunk = held.shift()) await out(chunk);
      heldBytes = 0;
    };
    try {
      if (!output) return;
      const { proc } = job;
      const chunks = untilExit(output, proc.exited);
      for (let next = chunks.next(); ; next = chunks.next()) {
        // Held output goes the moment the body ends, not at the program's next write.
        if (held.length > 0 && !job.bodyEnded) await Promise.race([next, job.bodyEnd]);
        if (job.bodyEnded) await release();
        const { value: read, done } = await next;
        if (done) break;
        const value = budget ? budget.take(read) : read;
        if (value.length === 0) continue;
        if (job.bodyEnded) {
          await out(value);
          continue;
        }
        held.push(value);
        heldBytes += value.length;
        if (heldBytes >= HOLD_BYTES) {
          // The next read waits: back-pressure on the program, which then
          // reads no more of its body either; the body is taken in (see writeBody).
          job.stalled = true;
          this.readBody(true);
          await job.bodyEnd;
        }
      }
    } catch {
      // a read error ends that stream like EOF
    } finally {
      await job.bodyEnd;
      await release();
      if (budget) await out(budget.end()); // the note of what did not go, if anything did not
    }
  }

  onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.responder.closed();
    live.delete(this);
    clearTimeout(this.timer);
    this.drained?.resolve();
    this.drained = undefined;
    this.spoolFile.close();
    this.pending.clear();
    const job = this.job;
    if (!job) return this.finish();
    // Nobody is left to read the answer: EOF on its input, TERM, then KILL.
    job.endBody();
    endInput(job.proc);
    if (job.proc.exitCode === null && job.proc.signalCode === null) endProgram(job.proc);
    void job.proc.exited.finally(() => this.finish());
  }
}
