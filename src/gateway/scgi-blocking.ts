// SCGI in a pool worker, blocking: the header read exactly (not a byte of
// the body), the body spooled to a file by splice(2), and the program given
// the connection itself as its stdout (zero-copy); the answer ends with a
// FIN once the program has exited.
import type { Address } from "../net/address.ts";
import type { GatewayOptions } from "../options.ts";
import { close, pipe, setPipeSize, SPLICE_F_MOVE, trySplice } from "../system/fd.ts";
import { EAGAIN, EINTR, strerror, SysError } from "../system/ffi.ts";
import { rewind } from "../system/files.ts";
import { MSG_PEEK, recvBefore, recvExactly, setReceiveTimeout, setSendTimeout, SHUT_WR, shutdown } from "../system/socket.ts";
import { watchIdle } from "../connection/watchdog.ts";
import { BAD_GATEWAY, bodyDue, gatewayLog, prepareCgi, type CgiSource } from "../request/cgi.ts";
import { COMMA, limitMs, MAX_DIGITS, parsePrefix, parseScgiHeader, type ScgiRequest } from "../request/scgi-header.ts";
import { spawnCgi } from "./cgi-process.ts";
import { bodyFile } from "./body-spool.ts";
import { logPipe, logStream, stderrPipe } from "./cgi-stderr.ts";
import { fs } from "../system/builtins.ts";

/**
 * The header of a connection a pool worker accepted (a blocking descriptor
 * it owns), by its deadline, counted from now; or why there is none (the
 * -v line). Ready for a program that reads the socket itself: no receive
 * timeout left on it.
 */
export function readScgiHeader(fd: number, options: GatewayOptions): ScgiRequest | { error: string } {
  // The header's deadline is absolute: a byte every few seconds must not hold the worker.
  const deadline = Date.now() + limitMs(options);
  try {
    const request = readHeader(fd, deadline);
    if (!("error" in request)) setReceiveTimeout(fd, 0); // the program's reads (or Bun's) must not time out
    return request;
  } catch (e) {
    const timedOut = e instanceof SysError && e.errno === EAGAIN;
    return { error: timedOut ? "no complete header in time" : e instanceof Error ? e.message : String(e) };
  }
}

/** The header read from a blocking socket by `deadline`, to the comma and not a byte further. */
function readHeader(fd: number, deadline: number): ScgiRequest | { error: string } {
  const peek = new Uint8Array(MAX_DIGITS + 1);
  const n = recvBefore(fd, peek, MSG_PEEK, deadline);
  if (n === 0) return { error: "connection ended before the header" };
  let prefix = parsePrefix(peek.subarray(0, n));
  let consumed = 0;
  if ("need" in prefix) {
    // The prefix came split across segments: read it a byte at a time (it is
    // header, so consuming it is safe) until the colon.
    const one = new Uint8Array(1);
    const seen: number[] = [];
    while ("need" in prefix) {
      if (!recvExactly(fd, one, deadline)) return { error: "connection ended in the header" };
      seen.push(one[0]);
      prefix = parsePrefix(new Uint8Array(seen));
    }
    consumed = seen.length;
  }
  if ("error" in prefix) return prefix;
  const rest = new Uint8Array(prefix.size - consumed + prefix.length + 1);
  if (!recvExactly(fd, rest, deadline)) return { error: "connection ended in the header" };
  const header = rest.subarray(prefix.size - consumed);
  if (header[prefix.length] !== COMMA) return { error: "netstring does not end with ','" };
  return parseScgiHeader(header.subarray(0, prefix.length));
}

/**
 * Ends the answer with a FIN, then reads and drops what is left of the
 * body (at most `length` bytes, until the peer's EOF or `ms`) and closes.
 * Closing a socket with unread bytes sends a reset instead of a FIN, and
 * the reset can destroy the answer before the web server has read it:
 * nginx then says 502. A CGI may answer without reading its body (RFC 3875).
 */
function finishAnswer(fd: number, length: number, ms: number): void {
  shutdown(fd, SHUT_WR);
  const deadline = Date.now() + ms;
  const buf = new Uint8Array(Math.min(length, 64 * 1024));
  try {
    for (let left = length; left > 0; ) {
      const n = recvBefore(fd, buf.subarray(0, Math.min(left, buf.length)), 0, deadline);
      if (n === 0) break;
      left -= n;
    }
  } catch {
    // timed out or reset: the answer is sent, nothing more to do
  }
  close(fd);
}

/** The pipe a spooled body passes through: 1 MiB a splice(2) where the kernel allows it (pipe-max-size). */
const SPOOL_PIPE_BYTES = 1 << 20;

/**
 * The whole body, taken in before the CGI runs: nginx stops sending the
 * body once it relays the answer's header, so a CGI that writes its header
 * before reading (git-http-backend) would wait for ever for the rest.
 * nginx has buffered the body whole by then, so this costs no waiting.
 * Spliced from the socket through a pipe into an unlinked file in $TMPDIR
 * inside the kernel, never through JavaScript nor the worker's memory (a
 * body is within --max-body: prepareCgi answered 413 past it); the file,
 * rewound, is the CGI's stdin. Each splice waits at most `idleMs`
 * (SO_RCVTIMEO applies to splice), and the whole body must come at
 * MIN_BODY_RATE after its first `idleMs`: a client dripping it must not
 * hold the worker.
 */
function spoolBody(fd: number, length: number, idleMs: number): number | { error: string } {
  let file: number;
  try {
    file = bodyFile();
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e) };
  }
  const [from, to] = pipe();
  const fail = (error: string) => {
    close(file);
    return { error };
  };
  try {
    setPipeSize(to, SPOOL_PIPE_BYTES);
    setReceiveTimeout(fd, idleMs);
    const started = Date.now();
    let waitMs = idleMs;
    for (let left = length; left > 0; ) {
      const due = bodyDue(started, idleMs, length - left, Date.now()) - Date.now(); // each splice also waits idleMs at most
      if (due <= 0) return fail(`the body came too slowly (${length - left} of ${length} bytes)`);
      // Each splice waits the idle limit, or what is left of the body's time when that is less.
      const wait = Math.max(1, Math.min(idleMs, Math.ceil(due)));
      if (wait !== waitMs) setReceiveTimeout(fd, (waitMs = wait));
      const n = trySplice(fd, to, Math.min(left, SPOOL_PIPE_BYTES), SPLICE_F_MOVE);
      if (n === -EINTR) continue;
      if (n === 0) return fail(`connection ended in the body (${length - left} of ${length} bytes)`);
      if (n < 0) return fail(n === -EAGAIN ? `connection timed out in the body (${length - left} of ${length} bytes came)` : `unable to read the body: ${strerror(-n)}`);
      left -= n;
      for (let inPipe = n; inPipe > 0; ) {
        const m = trySplice(from, file, inPipe, SPLICE_F_MOVE);
        if (m === -EINTR) continue;
        if (m <= 0) return fail(`unable to spool the body: ${m === 0 ? "end of pipe" : strerror(-m)}`);
        inPipe -= m;
      }
    }
    rewind(file);
    return file;
  } catch (e) {
    return fail(e instanceof Error ? e.message : String(e));
  } finally {
    close(from);
    close(to);
  }
}

/**
 * Serves one SCGI connection a pool worker accepted, its header read
 * (readScgiHeader): the body spooled, then the program with the connection
 * as its stdout, waited for by blocking (with --timeout by Bun's loop,
 * whose timers watch the connection).
 */
export async function serveScgiBlocking(fd: number, address: Address, options: GatewayOptions, source: CgiSource, request: ScgiRequest): Promise<void> {
  const { timeoutMs } = options;
  // A CONTENT_LENGTH over --max-body: 413, nothing runs, nothing is spooled.
  const launch = prepareCgi(source, request.variables, options, "scgi");
  let body: number | undefined;
  if (!("answer" in launch) && request.contentLength > 0) {
    const spooled = spoolBody(fd, request.contentLength, limitMs(options));
    if (typeof spooled !== "number") {
      gatewayLog(options, "scgi", spooled.error);
      close(fd);
      return;
    }
    body = spooled;
    setReceiveTimeout(fd, 0);
  }
  // stdin is the body (/dev/null when there is none: a CGI reading to EOF must
  // not get what the client sends past its CONTENT_LENGTH, nor wait for its close) and stdout
  // the connection; stderr a pipe read into socket's log line by line, so a
  // program's complaints never corrupt the HTTP answer (SCGI has no channel
  // for them) nor mix with another's.
  const engine = timeoutMs === undefined ? "blocking" : "evented";
  const errors = engine === "blocking" && !("answer" in launch) ? stderrPipe() : undefined;
  // --send-timeout: the CGI writes to the connection itself, so the kernel keeps it (request/send-deadline.ts):
  // a write of its the web server takes nothing of for that long fails (EAGAIN), and a CGI ends on a failed write.
  if (!("answer" in launch) && options.sendTimeoutMs !== undefined) setSendTimeout(fd, options.sendTimeoutMs);
  const proc = "answer" in launch || (engine === "blocking" && !errors) ? undefined : spawnCgi(launch, [body ?? "ignore", fd, errors?.[1] ?? "pipe"], engine);
  if (body !== undefined) close(body); // the program has its own
  if (errors) close(errors[1]);
  const unread = body === undefined ? request.contentLength : 0;
  if (!proc) {
    if (errors) close(errors[0]);
    try {
      fs().writeSync(fd, "answer" in launch ? launch.answer : BAD_GATEWAY);
    } catch {
      // the web server is gone
    }
    finishAnswer(fd, unread, limitMs(options));
    return;
  }
  if (timeoutMs !== undefined && address.kind === "inet") watchIdle(fd, proc, timeoutMs, (line) => gatewayLog(options, "scgi", line));
  // Our descriptor stays open (close-on-exec: the program has its own
  // copies) so that the answer can be finished cleanly once the program
  // is gone. So the answer ends when the program exits: a background
  // process it left holding the connection is cut off by our FIN.
  try {
    await (errors ? logPipe(errors[0], proc) : logStream(proc.stderr, proc));
  } finally {
    if (errors) close(errors[0]);
  }
  await proc.exited;
  finishAnswer(fd, unread, limitMs(options));
}
