// A CGI's stderr on socket's log (SCGI always, FastCGI under --cgi-stderr
// log), for every engine: the lines are request/stderr-lines.ts's, each
// one write(2) through system/log.ts. A pool worker reads the pipe in its
// own poll(2) (logPipe); Bun's loop reads it as a stream (logStream). Like
// the rest of a CGI's output, it is read until the program exits, not
// until every writer has gone: a process it left in the background must
// not hold the request.
import type { GatewayOptions } from "../options.ts";
import { pipe, pipeBytes, tryRead } from "../system/fd.ts";
import { EAGAIN, EINTR } from "../system/ffi.ts";
import { say, write } from "../system/log.ts";
import { POLLIN, tryPoll } from "../system/poll.ts";
import { nextTick } from "../system/signals.ts";
import { StderrLines } from "../request/stderr-lines.ts";
import type { Cgi } from "./cgi-process.ts";
import { untilExit } from "./until-exit.ts";

/** One request's program's stderr, written to the log line by line as it comes. */
export class CgiStderr {
  private readonly lines: StderrLines;
  private ended = false;

  constructor(proc: Cgi) {
    this.lines = new StderrLines(proc.pid, proc.name);
  }

  feed(bytes: Uint8Array): void {
    for (const line of this.lines.feed(bytes)) write(line);
  }

  /** The output is over: its last line and what was dropped, once. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const line of this.lines.end()) write(line);
  }
}

/** The program's stderr for the log when the options say so (FastCGI's default sends it to the web server). */
export function stderrLog(options: Pick<GatewayOptions, "cgiStderr">, proc: Cgi): CgiStderr | undefined {
  return options.cgiStderr === "log" ? new CgiStderr(proc) : undefined;
}

/**
 * A pool worker's pipe for a CGI's stderr: [read end, non-blocking; write
 * end]; or undefined, said on stderr, when none can be made (no
 * descriptor left): the program does not run, and the web server gets 502.
 */
export function stderrPipe(): [number, number] | undefined {
  try {
    return pipe("read");
  } catch (e) {
    say(`cannot run a CGI: no pipe for its stderr: ${e instanceof Error ? e.message : String(e)}`);
    return undefined;
  }
}

const buffer = new Uint8Array(64 * 1024);
// struct pollfd { int fd; short events; short revents; } as two int32 (little-endian).
const pollfds = new Int32Array(4);

/**
 * Blocking (a pool worker): `fd`, the read end of the program's stderr
 * pipe (non-blocking), into the log until its end or the program's exit
 * (its pidfd; then what the pipe holds at that moment is the last of it).
 * Without a pidfd (a program Bun started), until the pipe's end.
 */
export async function logPipe(fd: number, proc: Cgi): Promise<void> {
  const log = new CgiStderr(proc);
  const pidfd = proc.pidfd;
  let last: number | undefined;
  try {
    for (;;) {
      const n = tryRead(fd, last === undefined ? buffer : buffer.subarray(0, Math.min(last, buffer.length)));
      if (n > 0) {
        log.feed(buffer.subarray(0, n));
        if (last !== undefined && (last -= n) <= 0) return;
        continue;
      }
      if (n === -EINTR) continue;
      if (n !== -EAGAIN || last !== undefined) return; // its end, an error, or all it held at the exit
      pollfds.set([fd, POLLIN, pidfd ?? -1, POLLIN]);
      const ready = tryPoll(pollfds, pidfd === undefined ? 1 : 2, -1);
      if (ready === -EINTR) await nextTick(); // a signal: its handler runs
      else if (ready < 0) return;
      else if (pollfds[3] >>> 16 && (last = pipeBytes(fd)) === 0) return; // exited, nothing left
    }
  } finally {
    log.end();
  }
}

/** Evented: the program's stderr stream into the log until its end or the program's exit (untilExit). */
export async function logStream(stream: ReadableStream<Uint8Array> | undefined, proc: Cgi): Promise<void> {
  if (!stream) return;
  const log = new CgiStderr(proc);
  try {
    for await (const chunk of untilExit(stream, proc.exited)) log.feed(chunk);
  } catch {
    // a read error ends the stream like its end
  } finally {
    log.end();
  }
}
