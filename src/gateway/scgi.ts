// SCGI: a netstring header (`LEN:NAME\0VALUE\0...,`), then CONTENT_LENGTH
// bytes of body; the answer is whatever the CGI program writes. In a pool
// worker the header is read exactly and the program gets the connection
// itself (zero-copy); under -f (Bun's listener has already read bytes) and
// with --timeout (idle time is measured on copied bytes) the program runs
// on pipes and the body is copied.
import { writeSync } from "node:fs";
import { Copy, type Bytes, type Sink } from "../connection/copy.ts";
import { adoptDescriptor, type EventSocket, type SocketEvents } from "../connection/events.ts";
import type { Address } from "../net/address.ts";
import type { GatewayOptions } from "../options.ts";
import {
  close,
  EAGAIN,
  EINTR,
  MSG_PEEK,
  pipe,
  recvBefore,
  recvExactly,
  rewind,
  setPipeSize,
  setReceiveTimeout,
  SHUT_WR,
  shutdown,
  splice,
  SPLICE_F_MOVE,
  strerror,
  SysError,
} from "../system/libc.ts";
import { watchIdle } from "../connection/watchdog.ts";
import { BAD_GATEWAY, gatewayLog, HEADER_TIMEOUT_MS, LIMITS, prepareCgi, type CgiSource, type Launch } from "../request/cgi.ts";
import { spawnCgi } from "./cgi-process.ts";
import { variable, type Variable } from "../request/variables.ts";
import { bodyFile } from "./body-spool.ts";
import { spawn } from "../system/reaper.ts";

export interface ScgiRequest {
  variables: Variable[];
  contentLength: number;
}

/** The length prefix of a netstring: "LEN:" — digits, then a colon. */
export type Prefix = { length: number; size: number } | { need: true } | { error: string };

/** Longest prefix accepted: the header limit has 5 digits; a sixth allows leading zeros. */
const MAX_DIGITS = 6;
const COLON = 0x3a;
const COMMA = 0x2c;

export function parsePrefix(bytes: Uint8Array): Prefix {
  let i = 0;
  while (i < bytes.length && bytes[i] >= 0x30 && bytes[i] <= 0x39) i++;
  if (i > MAX_DIGITS) return { error: "netstring length has too many digits" };
  if (i === bytes.length) return { need: true };
  if (bytes[i] !== COLON || i === 0) return { error: "not a netstring (no LEN: prefix)" };
  const length = Number(new TextDecoder().decode(bytes.subarray(0, i)));
  if (length > LIMITS.headerBytes) return { error: `header of ${length} bytes is over the ${LIMITS.headerBytes}-byte limit` };
  return { length, size: i + 1 };
}

const decoder = new TextDecoder();

/**
 * The header's pairs (`header` is the netstring's content, without the
 * prefix and comma), checked as the SCGI spec says: CONTENT_LENGTH first
 * and a decimal number, SCGI=1 present, names unique, at most
 * LIMITS.variables pairs.
 */
export function parseScgiHeader(header: Uint8Array): ScgiRequest | { error: string } {
  const variables: Variable[] = [];
  const seen = new Set<string>();
  let at = 0;
  while (at < header.length) {
    const nameEnd = header.indexOf(0, at);
    const valueEnd = nameEnd < 0 ? -1 : header.indexOf(0, nameEnd + 1);
    if (valueEnd < 0) return { error: "header does not end with a complete NAME\\0VALUE\\0 pair" };
    const name = decoder.decode(header.subarray(at, nameEnd));
    if (name === "") return { error: "empty variable name" };
    if (seen.has(name)) return { error: `variable ${name} sent twice` };
    if (variables.length >= LIMITS.variables) return { error: `more than ${LIMITS.variables} variables` };
    seen.add(name);
    variables.push(variable(name, header.subarray(nameEnd + 1, valueEnd)));
    at = valueEnd + 1;
  }
  if (variables[0]?.[0] !== "CONTENT_LENGTH") return { error: "CONTENT_LENGTH is not the first variable" };
  const length = variables[0][1];
  if (!/^\d{1,15}$/.test(length)) return { error: `CONTENT_LENGTH '${length.slice(0, 20)}' is not a number` };
  if (!variables.some(([n, v]) => n === "SCGI" && v === "1")) return { error: "no SCGI=1 variable" };
  return { variables, contentLength: Number(length) };
}

/**
 * A whole netstring at the start of `bytes`: the request and where the
 * body starts, or that more bytes are needed, or why it is malformed.
 */
export function parseNetstring(bytes: Uint8Array): (ScgiRequest & { bodyStart: number }) | { need: true } | { error: string } {
  const prefix = parsePrefix(bytes.subarray(0, MAX_DIGITS + 1));
  if (!("length" in prefix)) return prefix;
  const end = prefix.size + prefix.length;
  if (bytes.length <= end) return { need: true };
  if (bytes[end] !== COMMA) return { error: "netstring does not end with ','" };
  const request = parseScgiHeader(bytes.subarray(prefix.size, end));
  return "error" in request ? request : { ...request, bodyStart: end + 1 };
}

/**
 * How long a connection has for its header, counted from accept (and for
 * the rest of a body nobody reads, from the program's end): 30 s, or
 * --timeout when smaller.
 */
function limitMs(options: GatewayOptions): number {
  return Math.min(HEADER_TIMEOUT_MS, options.timeoutMs ?? HEADER_TIMEOUT_MS);
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
 * (SO_RCVTIMEO applies to splice).
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
    for (let left = length; left > 0; ) {
      const n = splice(fd, to, Math.min(left, SPOOL_PIPE_BYTES), SPLICE_F_MOVE);
      if (n === -EINTR) continue;
      if (n === 0) return fail(`connection ended in the body (${length - left} of ${length} bytes)`);
      if (n < 0) return fail(n === -EAGAIN ? `connection timed out in the body (no byte for ${idleMs / 1000} s)` : `unable to read the body: ${strerror(-n)}`);
      left -= n;
      for (let inPipe = n; inPipe > 0; ) {
        const m = splice(from, file, inPipe, SPLICE_F_MOVE);
        if (m === -EINTR) continue;
        if (m <= 0) return fail(`unable to spool the body: ${m === 0 ? "end of pipe" : strerror(-m)}`);
        inPipe -= m;
      }
    }
    rewind(file);
    return file;
  } catch (e) {
    return fail((e as Error).message);
  } finally {
    close(from);
    close(to);
  }
}

/** Serves one SCGI connection a pool worker accepted (a blocking descriptor it owns). */
export async function serveScgiDescriptor(fd: number, address: Address, options: GatewayOptions, source: CgiSource): Promise<void> {
  // The header's deadline is absolute: a byte every few seconds must not hold the worker.
  const deadline = Date.now() + limitMs(options);
  let request: ScgiRequest | { error: string };
  try {
    request = readHeader(fd, deadline);
  } catch (e) {
    const timedOut = e instanceof SysError && e.errno === EAGAIN;
    request = { error: timedOut ? "no complete header in time" : (e as Error).message };
  }
  if ("error" in request) {
    gatewayLog(options, "scgi", request.error);
    close(fd);
    return;
  }
  try {
    setReceiveTimeout(fd, 0); // the program's reads (or Bun's) must not time out
  } catch (e) {
    gatewayLog(options, "scgi", (e as Error).message);
    close(fd);
    return;
  }
  // --timeout: on TCP the kernel's idle times are watched (no copy); on a
  // UNIX socket idle time is measured on the bytes moved, so they are copied.
  const { timeoutMs } = options;
  const watched = timeoutMs !== undefined && address.kind === "inet";
  if (timeoutMs !== undefined && !watched) {
    const handler = new ScgiHandler(options, source, request);
    await adoptDescriptor(fd, handler);
    await handler.done;
    return;
  }
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
  // stdin is the body (the connection itself when there is none) and stdout
  // the connection; stderr is socket's own, so a program's complaints never
  // corrupt the HTTP answer.
  const proc =
    "answer" in launch
      ? undefined
      : spawnCgi(launch.program, (group) =>
          spawn(launch.program.argv, { ...group, argv0: launch.program.argv0, cwd: launch.cwd, stdio: [body ?? fd, fd, "inherit"], env: launch.env }),
        );
  if (body !== undefined) close(body); // the program has its own
  const unread = body === undefined ? request.contentLength : 0;
  if (!proc) {
    try {
      writeSync(fd, "answer" in launch ? launch.answer : BAD_GATEWAY);
    } catch {
      // the web server is gone
    }
    finishAnswer(fd, unread, limitMs(options));
    return;
  }
  if (watched && timeoutMs !== undefined) watchIdle(fd, proc, timeoutMs, (line) => gatewayLog(options, "scgi", line));
  // Our descriptor stays open (close-on-exec: the program has its own
  // copies) so that the answer can be finished cleanly once the program
  // is gone. So the answer ends when the program exits: a background
  // process it left holding the connection is cut off by our FIN.
  await proc.exited;
  finishAnswer(fd, unread, limitMs(options));
}

/**
 * An SCGI connection served with the copy loop: collects the header from
 * data events, then starts the program on pipes and copies the body that
 * came with the header and the rest, and the program's output back.
 */
export class ScgiHandler implements SocketEvents {
  private socket: EventSocket | undefined;
  private chunks: Bytes[] = [];
  private size = 0;
  private copy: Copy | undefined;
  private timer: Timer | undefined;
  /** The program could not run: the answer is sent, the rest of the request is dropped. */
  private refused = false;
  /** The body being spooled before the program runs: the file, the bytes still to come, what to run. */
  private spool: { fd: number; left: number; launch: Exclude<Launch, { answer: Uint8Array }> } | undefined;
  private finish!: () => void;
  readonly done = new Promise<void>((resolve) => (this.finish = resolve));

  constructor(
    private readonly options: GatewayOptions,
    private readonly source: CgiSource,
    /** Already read (a worker read the header itself): go straight to the program. */
    private readonly request?: ScgiRequest,
  ) {}

  attach(socket: EventSocket): void {
    this.socket = socket;
    if (this.request) return this.start(this.request, new Uint8Array(0));
    // Once, from the connect: not restarted by data, so a drip cannot stretch it.
    this.timer = setTimeout(() => this.fail("no complete header in time"), limitMs(this.options));
  }

  onData(chunk: Uint8Array): void {
    if (this.copy) return this.copy.onData(chunk);
    if (this.spool) return this.take(chunk);
    if (this.refused) return;
    this.chunks.push(new Uint8Array(chunk) as Bytes);
    this.size += chunk.length;
    const bytes = this.chunks.length === 1 ? this.chunks[0] : (Buffer.concat(this.chunks) as Bytes);
    this.chunks = [bytes];
    let parsed: ReturnType<typeof parseNetstring>;
    try {
      parsed = parseNetstring(bytes);
    } catch (e) {
      parsed = { error: `internal error: ${(e as Error).message}` }; // this connection only
    }
    if ("need" in parsed) {
      if (this.size > LIMITS.headerBytes + MAX_DIGITS + 2) this.fail("header over the limit");
      return;
    }
    if ("error" in parsed) return this.fail(parsed.error);
    clearTimeout(this.timer);
    this.chunks = [];
    this.start(parsed, bytes.subarray(parsed.bodyStart));
  }

  private start(request: ScgiRequest, bodyStart: Uint8Array): void {
    const launch = prepareCgi(this.source, request.variables, this.options, "scgi");
    if ("answer" in launch) return this.refuse(launch.answer);
    if (request.contentLength === 0) return this.run(launch, undefined);
    // As spoolBody does in a pool, for the same reason: the whole body before the program runs.
    let fd: number;
    try {
      fd = bodyFile();
    } catch (e) {
      return this.fail(e instanceof Error ? e.message : String(e)); // as a worker's spoolBody does
    }
    this.spool = { fd, left: request.contentLength, launch };
    this.take(bodyStart);
  }

  /** Body bytes into the spool; the program starts once all CONTENT_LENGTH bytes are in. */
  private take(chunk: Uint8Array): void {
    const spool = this.spool!;
    clearTimeout(this.timer);
    const part = chunk.subarray(0, spool.left);
    try {
      for (let at = 0; at < part.length; ) at += writeSync(spool.fd, part.subarray(at));
    } catch (e) {
      return this.fail(`unable to spool the body: ${(e as Error).message}`);
    }
    spool.left -= part.length;
    if (spool.left > 0) {
      this.timer = setTimeout(() => this.fail(`connection timed out in the body (no byte for ${limitMs(this.options) / 1000} s)`), limitMs(this.options));
      return;
    }
    this.spool = undefined;
    try {
      rewind(spool.fd);
      this.run(spool.launch, spool.fd);
    } finally {
      close(spool.fd); // the program has its own
    }
  }

  /** The program could not or must not run: this answer, then as finishAnswer does: FIN, drop the body until the peer's EOF, then close. */
  private refuse(answer: Uint8Array): void {
    const socket = this.socket!;
    this.refused = true;
    socket.write(answer);
    socket.shutdown();
    this.timer = setTimeout(() => socket.terminate(), limitMs(this.options));
  }

  /** The program on pipes, or with the spooled body as its stdin; the copy loop joins them to the connection. */
  private run(launch: Exclude<Launch, { answer: Uint8Array }>, body: number | undefined): void {
    const socket = this.socket!;
    const { program, cwd, env } = launch;
    const proc = spawnCgi(program, (group) => spawn(program.argv, { ...group, argv0: program.argv0, cwd, stdio: [body ?? "pipe", "pipe", "inherit"], env }));
    if (!proc) return this.refuse(BAD_GATEWAY);
    // The answer ends when the program exits (lingerMs: FIN, then the
    // unread body is dropped); a background process it left is cut off.
    const log = (line: string) => gatewayLog(this.options, "scgi", line);
    this.copy = new Copy(
      {
        sources: [proc.stdout],
        // Spooled: nothing more of the peer's goes to the program.
        sink: body === undefined ? (proc.stdin as Sink) : null,
        program: { pid: proc.pid, exited: proc.exited, kill: () => proc.kill("SIGKILL") },
      },
      { crlf: false, quit: false, timeoutMs: this.options.timeoutMs, log, lingerMs: limitMs(this.options) },
    );
    this.copy.attach(socket);
  }

  private fail(why: string): void {
    clearTimeout(this.timer);
    gatewayLog(this.options, "scgi", why);
    this.socket?.terminate();
  }

  onEnd(): void {
    if (this.copy) return this.copy.onEnd();
    if (this.spool) return this.fail("connection ended in the body");
    if (this.refused) return void this.socket?.end();
    this.fail("connection ended in the header");
  }

  onDrain(): void {
    this.copy?.onDrain();
  }

  onClose(): void {
    clearTimeout(this.timer);
    if (this.spool) close(this.spool.fd);
    this.spool = undefined;
    if (!this.copy) return this.finish();
    this.copy.onClose();
    void this.copy.done.then(() => this.finish());
  }
}
