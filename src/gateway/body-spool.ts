// Request bodies held by socket, on disk (an unlinked file in $TMPDIR, as
// nginx's client_body_temp_path) rather than in a worker's memory: a
// FastCGI body with no CONTENT_LENGTH (Apache's mod_proxy_fcgi sends a
// chunked one so), taken in whole before the CGI starts so that the CGI
// gets its CONTENT_LENGTH (RFC 3875 4.2); and a body the CGI has not taken
// yet while its output is held (BodyQueue). One helper for both kinds of
// FastCGI connection; SCGI's spool uses the same directory.
import { ftruncateSync, readSync, writeSync } from "node:fs";
import { close, rewind, unlinkedFile } from "../system/libc.ts";
import { warn } from "../system/log.ts";
import { bodyOverLimit, gatewayLog, TOO_LARGE } from "../request/cgi.ts";
import type { Variable } from "../request/variables.ts";
import { encodeRecord, TYPE } from "../request/fastcgi-records.ts";

/**
 * A new file for a body: unlinked, in $TMPDIR (else /tmp). When none can be
 * made there, the operator is told (the request fails: the caller drops it).
 */
export function bodyFile(): number {
  const dir = process.env.TMPDIR || "/tmp";
  try {
    return unlinkedFile(dir);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    warn("body file", `cannot hold a request body in ${dir} (TMPDIR): ${why}`);
    throw e;
  }
}

/** All of `bytes` into a file at `at` (a regular file takes it whole, but a short write is not an error). */
function writeAt(fd: number, bytes: Uint8Array, at: number): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done, at + done);
}

export interface BodySpool {
  /** The request's variables, to run the CGI with once the body has ended. */
  variables: Variable[];
  /** The file, made at the first byte (none for an empty body). */
  fd: number | undefined;
  size: number;
  /** Past --max-body: the body is read and dropped to its end, then answered 413. */
  refused: boolean;
}

/**
 * At the end of a FastCGI request's PARAMS: undefined when its body streams
 * into the CGI's stdin (a CONTENT_LENGTH within --max-body); else a spool,
 * to read it whole into a file before the CGI runs (no CONTENT_LENGTH), or
 * refused (a CONTENT_LENGTH over --max-body: the CGI never runs).
 *
 * A refused body is read and dropped to its end, and only then answered
 * 413: nginx stops sending a body once it has the answer's header, so an
 * answer before the body's end would leave the request hanging, and a
 * close with the body unread sends a reset that can destroy the answer
 * (nginx then says 502). The caller's body deadline bounds the wait.
 */
export function spoolFor(variables: Variable[], streams: boolean, options: { maxBody: number; verbose: boolean }): BodySpool | undefined {
  const spool: BodySpool = { variables, fd: undefined, size: 0, refused: false };
  if (!streams) return spool;
  const length = Number(variables.find(([name]) => name === "CONTENT_LENGTH")?.[1]);
  const over = bodyOverLimit(options, length, "declared");
  if (!over) return undefined;
  gatewayLog(options, "fastcgi", over);
  spool.refused = true;
  return spool;
}

/** What a STDIN record of a spooled body leads to. */
export type SpoolStep =
  /** Taken: more is to come. */
  | { more: true }
  /** Past --max-body: dropped. */
  | { dropped: true }
  /** The body has ended: run the CGI so (the caller closes spool.fd once it has it), or, refused (413 sent), end the request. */
  | { run: { variables: Variable[]; stdin: number | "ignore" } }
  | { refused: true };

/**
 * One STDIN record of request `id` into the spool, within --max-body
 * (cgi.ts bodyOverLimit): from the record that passes it the body is
 * dropped, and at its end 413 is sent (`send`: the connection's; see spoolFor).
 */
export function spoolRecord(
  spool: BodySpool,
  content: Uint8Array,
  id: number,
  options: { maxBody: number; verbose: boolean },
  send: (bytes: Uint8Array) => void,
): SpoolStep {
  if (content.length === 0 && spool.refused) {
    send(encodeRecord(TYPE.STDOUT, id, TOO_LARGE));
    return { refused: true };
  }
  if (content.length === 0) return { run: spooledInput(spool) };
  if (spool.refused) return { dropped: true };
  const over = bodyOverLimit(options, spool.size + content.length, "received");
  if (over) {
    gatewayLog(options, "fastcgi", over);
    spool.refused = true;
    closeSpool(spool);
    return { dropped: true };
  }
  spool.fd ??= bodyFile();
  writeAt(spool.fd, content, spool.size);
  spool.size += content.length;
  return { more: true };
}

export function closeSpool(spool: BodySpool): void {
  if (spool.fd !== undefined) close(spool.fd);
  spool.fd = undefined;
}

/**
 * The body has ended: the CGI's variables with CONTENT_LENGTH its size (the
 * web server's own, empty or absent, stays when there is none), and its
 * stdin, the file rewound.
 */
function spooledInput(spool: BodySpool): { variables: Variable[]; stdin: number | "ignore" } {
  const { variables, fd, size } = spool;
  if (fd !== undefined) rewind(fd);
  return {
    variables: size === 0 ? variables : [...variables.filter(([n]) => n !== "CONTENT_LENGTH"), ["CONTENT_LENGTH", String(size)]],
    stdin: fd ?? "ignore",
  };
}

/** Body bytes kept in memory before the rest goes to the file. */
const MEMORY_BYTES = 256 * 1024;
/** Read back from the file a piece at a time. */
const READ_BYTES = 64 * 1024;

/**
 * Body bytes the CGI has not taken yet, in order: in memory up to
 * MEMORY_BYTES, past that appended to an unlinked file in $TMPDIR and read
 * back a piece at a time as the CGI takes them. A CGI that writes its
 * answer before it reads its body waits to write while its output is held
 * until the body's end, so the body must be taken in meanwhile (pausing it
 * would deadlock): this keeps it out of the worker's memory. The file is
 * emptied whenever it has been read to its end.
 */
export class BodyQueue {
  private chunks: Uint8Array[] = [];
  private memory = 0;
  private file: number | undefined;
  private readFrom = 0;
  private writeTo = 0;

  /** Bytes waiting, in memory and in the file. */
  get size(): number {
    return this.memory + this.writeTo - this.readFrom;
  }

  push(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (this.writeTo === this.readFrom && this.memory + bytes.length <= MEMORY_BYTES) {
      this.chunks.push(bytes);
      this.memory += bytes.length;
      return;
    }
    this.file ??= bodyFile();
    writeAt(this.file, bytes, this.writeTo);
    this.writeTo += bytes.length;
  }

  /** The next bytes to give, still queued until take() says how many went; undefined when empty. */
  head(): Uint8Array | undefined {
    if (this.chunks.length === 0 && this.file !== undefined && this.writeTo > this.readFrom) {
      const piece = new Uint8Array(Math.min(READ_BYTES, this.writeTo - this.readFrom));
      const n = readSync(this.file, piece, 0, piece.length, this.readFrom);
      if (n <= 0) throw new Error("the held body's file ended early");
      this.readFrom += n;
      this.chunks.push(piece.subarray(0, n));
      this.memory += n;
      if (this.readFrom === this.writeTo) {
        ftruncateSync(this.file, 0); // its blocks back: the next bytes start it again
        this.readFrom = this.writeTo = 0;
      }
    }
    return this.chunks[0];
  }

  /** `n` bytes of head() have gone. */
  take(n: number): void {
    const head = this.chunks[0];
    this.memory -= n;
    if (n < head.length) this.chunks[0] = head.subarray(n);
    else this.chunks.shift();
  }

  /** Everything dropped, the file closed. */
  clear(): void {
    this.chunks = [];
    this.memory = 0;
    if (this.file !== undefined) close(this.file);
    this.file = undefined;
    this.readFrom = this.writeTo = 0;
  }
}
