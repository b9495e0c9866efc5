// A FastCGI program's output without copying (pool workers only): its
// stdout pipe is spliced into the connection, each FCGI_STDOUT record's
// 8-byte header sent first (FIONREAD says how many bytes the pipe holds: at
// most MAX_CONTENT a record, spliced exactly). Its stderr, small, is read
// here and sent as STDERR records. This blocks the worker's thread in
// poll(2) while the output lasts, as the rest of its FastCGI connection
// does (fastcgi-blocking.ts): a worker has nothing else to do meanwhile.
// What the web server sends then (ABORT_REQUEST, its close) makes the
// connection readable: the caller's input hook reads it, and body bytes the
// program has yet to take go into its stdin as it takes them (feed).
//
// The program's output is held until the end of its body (the responder's rule) by
// not starting this until then: the pipes hold it (stdout's grown to
// HOLD_BYTES), and then the program waits to write.
//
// The output ends when both pipes do, or when the program exits: then
// what the pipes hold at that moment is sent and no more. A process it
// left in the background (`cmd &`) keeps the pipes open, but the request
// is the program's, and it is over.
import { close, pipe, pipeBytes, setPipeSize, SPLICE_F_MORE, SPLICE_F_MOVE, SPLICE_F_NONBLOCK, tryRead, trySplice } from "../system/fd.ts";
import { EAGAIN, EINTR, strerror } from "../system/ffi.ts";
import { POLLHUP, POLLIN, POLLOUT, tryPoll } from "../system/poll.ts";
import { trySend } from "../system/socket.ts";
import { nextTick } from "../system/signals.ts";
import { encodeRecord, MAX_CONTENT, TYPE } from "../request/fastcgi-records.ts";
import { HOLD_BYTES } from "../request/fastcgi-engine.ts";
import { StderrBudget } from "../request/stderr-lines.ts";
import type { SendClock } from "../request/fastcgi-engine.ts";

export type Pipes = { stdout: number; stderr: number };

export interface OutputEnds {
  conn: number;
  /** Read ends of the program's stdout and stderr pipes, non-blocking. */
  stdout: number;
  stderr: number;
  /** --cgi-stderr log: stderr goes there, line by line, instead of STDERR records; ended with the output. */
  stderrLog?: { feed(bytes: Uint8Array): void; end(): void };
  requestId: number;
  /** The program's pidfd: readable once it has exited. */
  pidfd: number;
}

export interface OutputHooks {
  /** --timeout: since the last byte moved. */
  readonly timeoutMs: number | undefined;
  /** A byte moved (the connection's own timer restarts). */
  moved(): void;
  /** Records the handler queued meanwhile (replies to what the web server sent): sent between ours. */
  takeQueued(): Uint8Array[];
  /** Whether the connection's input is worth watching (not paused, not at EOF). */
  watchInput(): boolean;
  /** The connection is readable (records, its end): read it now. */
  input(): void;
  /** The program's stdin while body bytes wait to go into it (-1: none), and what writes them when it takes more. */
  stdinFd(): number;
  feed(): void;
  /** The connection has closed or the request is over (ABORT, a drop): stop. */
  over(): boolean;
  /** --request-timeout or --send-timeout: when the request is due (Infinity: never), and what ends it then (request/request-deadline.ts, send-deadline.ts). */
  dueAt(): number;
  /** --send-timeout's clock: told whether output waits for the connection, and when the connection takes some. */
  readonly sending: SendClock;
  overdue(): void;
  /** A STDOUT record is going out: a byte of the answer has. */
  answering(): void;
  /** The master's control socket while its word is unheard (-1: not watched), and what hears it (a stopping worker's END_REQUEST carries the end). */
  control(): number;
  heard(): void;
}

/** "cut": --request-timeout ended the request; what was framed went, the rest of the output is the caller's to drop. */
export type OutputEnd = "done" | "exited" | "timeout" | "gone" | "cut" | { error: string };

const stderrBuffer = new Uint8Array(MAX_CONTENT);
/** How long the records framed before --request-timeout ended a request may take to go. */
const CUT_SEND_MS = 1000;
/** How long the last bytes of an output wait for the program's exit (and END_REQUEST) before they are pushed alone. */
const PUSH_AFTER_MS = 5;
// struct pollfd { int fd; short events; short revents; } as two int32 (little-endian), up to 6.
const pollfds = new Int32Array(12);

/**
 * Both pipes read to their end and every record sent, or why not. The pipes
 * stay open: the caller closes them. "exited": done, and the program's
 * exit was seen meanwhile. "done": the last record may be held
 * back (SPLICE_F_MORE) for what the caller sends next without MSG_MORE
 * (END_REQUEST), or for pushPending.
 */
export async function spliceOutput(ends: OutputEnds, hooks: OutputHooks): Promise<OutputEnd> {
  const splicer = new Splicer(ends, hooks);
  try {
    return await splice(splicer, hooks);
  } finally {
    ends.stderrLog?.end();
  }
}

async function splice(splicer: Splicer, hooks: OutputHooks): Promise<OutputEnd> {
  for (;;) {
    if (hooks.over()) return "gone";
    if (!splicer.cutting && Date.now() >= hooks.dueAt()) {
      hooks.overdue();
      if (hooks.over()) return "gone"; // --send-timeout's: the connection was dropped
      splicer.cutting = true; // the records framed go, whole; no more are
      splicer.cutAt = Date.now();
    }
    // A web server that takes nothing more must not hold the worker: what is framed has a second to go.
    if (splicer.cutting && Date.now() >= splicer.cutAt + CUT_SEND_MS) return { error: "the web server took nothing of a request ended by --request-timeout" };
    splicer.connBlocked = false;
    const sent = splicer.send();
    if (typeof sent !== "boolean") return sent;
    if (sent || !splicer.connBlocked) hooks.sending.took();
    if (splicer.connBlocked) hooks.sending.blocked(Date.now());
    if (splicer.cutting && splicer.sent()) return "cut";
    // At a record boundary: the next record, from either pipe or the handler.
    const framed = splicer.left === 0 && !splicer.cutting && splicer.frame();
    if (sent || framed) {
      splicer.lastMove = Date.now();
      hooks.moved();
      continue;
    }
    if (splicer.over()) return splicer.exited ? "exited" : "done";
    // Nothing can go on: sleep until something can.
    const slept = splicer.sleep();
    if (slept === "signal") await nextTick(); // let signal handlers run
    else if (slept !== "woken") return slept;
  }
}

/** One output's splice: what is framed and not yet sent, and which pipes are open. */
class Splicer {
  /** Bytes to send before anything else: record headers, STDERR records, queued replies. */
  private readonly out: Uint8Array[] = [];
  /** Content of the last STDOUT header in `out` still to splice after it. */
  left = 0;
  /** The pipe held more than that record when it was framed: SPLICE_F_MORE (else the bytes go out now: the answer streams). */
  private more = false;
  private stdoutOpen = true;
  private stderrOpen = true;
  private stdoutHup = false;
  /** What the last poll said a pipe has (data or its end): only then is it read, or asked how much it holds. */
  private stdoutReady = false;
  private stderrReady = false;
  connBlocked = false;
  /** --request-timeout ended the request: what is framed is sent (within CUT_SEND_MS of `cutAt`), nothing more is read. */
  cutting = false;
  cutAt = 0;
  lastMove = Date.now();
  /** Once the program has exited: what each pipe held then, the last of its output. */
  private last: { stdout: number; stderr: number } | undefined;
  private readonly stderrBudget = new StderrBudget();

  constructor(
    private readonly ends: OutputEnds,
    private readonly hooks: OutputHooks,
  ) {}

  /** The program's pidfd has been readable: it has exited. */
  get exited(): boolean {
    return this.last !== undefined;
  }

  /** Both pipes have ended and everything has gone. */
  over(): boolean {
    return !this.stdoutOpen && !this.stderrOpen && this.out.length === 0 && this.left === 0;
  }

  /** Every record framed has gone. */
  sent(): boolean {
    return this.out.length === 0 && this.left === 0;
  }

  /** What must go first, in order, then the STDOUT record's content: whether anything moved, or why the output ends. */
  send(): boolean | OutputEnd {
    const { out, ends } = this;
    let progress = false;
    while (out.length > 0) {
      const head = out[0];
      const sent = trySend(ends.conn, head, this.left > 0 || out.length > 1); // a header: its content follows
      if (sent === -EAGAIN) {
        this.connBlocked = true;
        return progress;
      }
      if (sent === -EINTR) continue;
      if (sent < 0) return "gone";
      progress = true;
      if (sent < head.length) out[0] = head.subarray(sent);
      else out.shift();
    }
    if (this.left === 0) return progress;
    const moved = trySplice(ends.stdout, ends.conn, this.left, SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (this.more ? SPLICE_F_MORE : 0));
    if (moved > 0) {
      this.left -= moved;
      return true;
    }
    if (moved === -EAGAIN) this.connBlocked = true;
    else if (moved === 0) return { error: "the program's stdout ended inside a record" }; // FIONREAD counted these bytes: not expected
    else if (moved !== -EINTR) return "gone";
    return progress;
  }

  /** Stderr's bytes as a STDERR record, within the request's budget; nothing when none go. */
  private toWebServer(bytes: Uint8Array): void {
    const going = this.stderrBudget.take(bytes);
    if (going.length > 0) this.out.push(encodeRecord(TYPE.STDERR, this.ends.requestId, going));
  }

  /** Stderr has ended: the note of what did not go, once, if anything did not; whether it was framed. */
  private noteDropped(): boolean {
    const note = this.stderrBudget.end();
    if (note.length > 0) this.out.push(encodeRecord(TYPE.STDERR, this.ends.requestId, note));
    return note.length > 0;
  }

  /** The next records: queued replies, what stderr has, a STDOUT header for what stdout holds. Whether any came. */
  frame(): boolean {
    const { out, ends, last } = this;
    let progress = false;
    out.push(...this.hooks.takeQueued());
    if (last?.stderr === 0) this.stderrOpen = false; // all it held at the exit has gone
    if (this.stderrOpen && (this.stderrReady || last)) {
      const n = tryRead(ends.stderr, last ? stderrBuffer.subarray(0, Math.min(last.stderr, MAX_CONTENT)) : stderrBuffer);
      if (n > 0) {
        if (ends.stderrLog) ends.stderrLog.feed(stderrBuffer.subarray(0, n));
        else this.toWebServer(stderrBuffer.subarray(0, n));
        if (last) last.stderr -= n;
        // A read of a pipe takes all it holds up to the buffer's size: short, it has none left now.
        if (n < stderrBuffer.length) this.stderrReady = false;
        progress = true;
      } else if (n === -EAGAIN) this.stderrReady = false;
      else if (n === 0 || last?.stderr === 0) this.stderrOpen = false;
      else if (n !== -EINTR) this.stderrOpen = false; // a read error ends that stream like EOF
    }
    if (!this.stderrOpen && !ends.stderrLog && this.noteDropped()) progress = true;
    if (!this.stdoutOpen || !(this.stdoutReady || last)) return progress;
    // Once the program has exited, what the pipe held then is the last of it (the pipe holds at least that).
    const waiting = last ? last.stdout : pipeBytes(ends.stdout);
    if (waiting > 0) {
      this.left = Math.min(waiting, MAX_CONTENT);
      if (last) last.stdout -= this.left;
      // The last bytes wait for the caller's END_REQUEST (or its push): one segment for the web server.
      this.more = waiting > this.left || (this.stdoutHup && !this.stderrOpen) || last !== undefined;
      // What is left past this record is framed once it has gone, without asking poll first.
      this.stdoutReady = waiting > this.left;
      out.push(stdoutHeader(ends.requestId, this.left));
      this.hooks.answering();
      return true;
    }
    this.stdoutReady = false;
    if (this.stdoutHup || last) this.stdoutOpen = false; // every writer has gone (or the program), and nothing is left
    return progress;
  }

  /** One poll(2) for the connection, the pipes, the program's stdin and its exit. */
  sleep(): "woken" | "signal" | OutputEnd {
    const { ends, hooks, connBlocked } = this;
    let count = 0;
    const watch = (fd: number, events: number) => {
      pollfds[2 * count] = fd;
      pollfds[2 * count + 1] = events;
      return count++;
    };
    const input = hooks.watchInput();
    const connAt = connBlocked || input ? watch(ends.conn, (connBlocked ? POLLOUT : 0) | (input ? POLLIN : 0)) : -1;
    const framing = !connBlocked && this.left === 0;
    const stdoutAt = framing && this.stdoutOpen ? watch(ends.stdout, POLLIN) : -1;
    const stderrAt = framing && this.stderrOpen ? watch(ends.stderr, POLLIN) : -1;
    // The program may be waiting for the rest of its body before it writes more.
    const stdin = hooks.stdinFd();
    const stdinAt = stdin >= 0 ? watch(stdin, POLLOUT) : -1;
    const pidfdAt = this.last ? -1 : watch(ends.pidfd, POLLIN);
    const control = hooks.control();
    const controlAt = control >= 0 ? watch(control, POLLIN) : -1;
    const idleAt = hooks.timeoutMs === undefined ? Infinity : this.lastMove + hooks.timeoutMs;
    const at = Math.min(idleAt, this.cutting ? this.cutAt + CUT_SEND_MS : hooks.dueAt());
    const ready = tryPoll(pollfds, count, at === Infinity ? -1 : Math.ceil(Math.max(0, at - Date.now())));
    if (ready === -EINTR) return "signal";
    if (ready === 0) return Date.now() >= idleAt ? "timeout" : "woken"; // or the request is due: the loop ends it
    if (ready < 0) return { error: `poll: ${strerror(-ready)}` };
    const revents = (i: number) => (i >= 0 ? pollfds[2 * i + 1] >>> 16 : 0);
    if (revents(controlAt)) hooks.heard();
    const stdout = revents(stdoutAt);
    // Every writer gone (the program has ended): what the pipe holds is the last of it; without POLLIN, nothing.
    if (stdout & POLLHUP) this.stdoutHup = true;
    if (stdout & POLLIN) this.stdoutReady = true;
    else if (stdout & POLLHUP) this.stdoutOpen = false;
    // Stderr likewise: ended empty, it is over without a read, nor a FIONREAD at the exit (mostly a CGI writes none).
    const stderr = revents(stderrAt);
    if (stderr & POLLHUP && !(stderr & POLLIN)) this.stderrOpen = false;
    else if (stderr) this.stderrReady = true;
    // The record being spliced (`left`) is still in the pipe: it is not counted again.
    if (revents(pidfdAt)) {
      const held = (open: boolean, fd: number) => (open ? pipeBytes(fd) : 0); // a pipe at its end holds nothing
      this.last ??= { stdout: held(this.stdoutOpen, ends.stdout) - this.left, stderr: held(this.stderrOpen, ends.stderr) };
    }
    if (revents(stdinAt)) hooks.feed();
    // The web server sent something (or closed): read it, then this goes on.
    if (revents(connAt) & ~POLLOUT) hooks.input();
    return "woken";
  }
}

/**
 * After its output has ended, the program's exit (its pidfd readable),
 * with the connection still read as while it wrote (an ABORT_REQUEST ends
 * the program); "timeout" past --timeout, "gone" when the connection
 * closed meanwhile, "cut" when --request-timeout ended it. The exit mostly
 * follows at once, and what SPLICE_F_MORE held back goes with END_REQUEST;
 * a program that runs on gets `push` called PUSH_AFTER_MS in.
 */
export async function awaitExit(conn: number, pidfd: number, hooks: OutputHooks, push: () => void): Promise<"exited" | "timeout" | "gone" | "cut"> {
  let lastMove = Date.now();
  let pushed = false;
  for (;;) {
    const idle = hooks.timeoutMs === undefined ? Infinity : lastMove + hooks.timeoutMs - Date.now();
    if (idle <= 0) return "timeout";
    const due = hooks.dueAt() - Date.now();
    if (due <= 0) return (hooks.overdue(), "cut");
    const left = Math.min(idle, due);
    // After the web server's end (a half-close may still want END_REQUEST) its input is not watched (-1: poll skips it).
    pollfds.set([pidfd, POLLIN, hooks.watchInput() ? conn : -1, POLLIN, hooks.control(), POLLIN]);
    const wait = pushed ? left : Math.min(left, PUSH_AFTER_MS);
    const ready = tryPoll(pollfds, 3, wait === Infinity ? -1 : Math.ceil(wait));
    if (ready === -EINTR) {
      await nextTick(); // a signal: its handler runs
      continue;
    }
    if (ready < 0) throw new Error(`poll: ${strerror(-ready)}`);
    if (ready === 0 && !pushed) {
      pushed = true;
      push();
      continue;
    }
    if (pollfds[5] >>> 16) hooks.heard(); // before the exit: a stop's END_REQUEST then carries the end
    if (pollfds[1] >>> 16) return "exited";
    if (pollfds[3] >>> 16) {
      lastMove = Date.now();
      hooks.input();
      if (hooks.over()) return "gone";
    }
  }
}

/** An FCGI_STDOUT header for `length` bytes of content, no padding. */
function stdoutHeader(requestId: number, length: number): Uint8Array {
  return new Uint8Array([1, TYPE.STDOUT, requestId >> 8, requestId & 0xff, length >> 8, length & 0xff, 0, 0]);
}

/**
 * The program's stdout and stderr as our own pipes, to splice from: `child`
 * its write ends (closed by the caller once it has them), `ours` the read
 * ends, non-blocking. With `streamed` (a body still to stream in), `input`
 * too (the program's read end, our write end), and stdout grows to
 * HOLD_BYTES: it holds the output until the body has ended. All or none:
 * out of descriptors, what was made is closed.
 */
export function outputPipes(streamed: boolean): { child: Pipes; ours: Pipes; input: [number, number] | undefined } {
  const made: number[] = [];
  const make = (how: "read" | "write") => {
    const ends = pipe(how);
    made.push(...ends);
    return ends;
  };
  try {
    const [stdout, stdoutChild] = make("read");
    const [stderr, stderrChild] = make("read");
    // A streamed body: its pipe (the program's end first), and room for the output held meanwhile.
    const input = streamed ? make("write") : undefined;
    if (streamed) setPipeSize(stdout, HOLD_BYTES);
    return { child: { stdout: stdoutChild, stderr: stderrChild }, ours: { stdout, stderr }, input };
  } catch (e) {
    // Out of descriptors (EMFILE): what was made must not stay open for ever.
    for (const fd of made) close(fd);
    throw e;
  }
}

export function closePipes(pipes: Pipes): void {
  close(pipes.stdout);
  close(pipes.stderr);
}
