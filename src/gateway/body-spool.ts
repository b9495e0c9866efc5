// Request bodies held by socket, on disk (an unlinked file in $TMPDIR, as
// nginx's client_body_temp_path) rather than in a worker's memory: a
// FastCGI body with no CONTENT_LENGTH (Apache's mod_proxy_fcgi sends a
// chunked one so), taken in whole before the CGI starts so that the CGI
// gets its CONTENT_LENGTH (RFC 3875 4.2); and a body the CGI has not taken
// yet while its output is held (BodyQueue). One helper for both FastCGI
// engines; SCGI's spool uses the same directory.
import { close } from "../system/fd.ts";
import { rewind, unlinkedFile } from "../system/files.ts";
import { warn } from "../system/log.ts";
import { fs } from "../system/builtins.ts";

/** How many --max-body's worth of bodies -l -f's connections together may hold on disk (a pool: one per worker). */
export const BODIES_ON_DISK = 8;

/**
 * Bytes of request bodies on disk in this process, all connections
 * together. A pool worker serves one connection at a time, so --max-body
 * bounds it there; under -l -f every connection could hold --max-body at
 * once (on a tmpfs $TMPDIR, in memory), so the server limits the sum
 * (limitBodiesOnDisk) and a body that would pass it is refused (503), said
 * at most once a second.
 */
const onDisk = { limit: Infinity, held: 0 };

export function limitBodiesOnDisk(maxBody: number): void {
  onDisk.limit = BODIES_ON_DISK * maxBody;
}

/** `bytes` more on disk, if the limit allows; false (and said) if not. */
export function reserveDisk(bytes: number): boolean {
  if (onDisk.held + bytes > onDisk.limit) {
    warn("bodies on disk", `503: request bodies on disk would pass ${onDisk.limit} bytes (${BODIES_ON_DISK} × --max-body): one refused`);
    return false;
  }
  onDisk.held += bytes;
  return true;
}

export function releaseDisk(bytes: number): void {
  onDisk.held -= bytes;
}

/** A body that would pass the limit on bodies held on disk: its connection is dropped. */
export class DiskLimit extends Error {}

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
  for (let done = 0; done < bytes.length; ) done += fs().writeSync(fd, bytes, done, bytes.length - done, at + done);
}

/**
 * A body without CONTENT_LENGTH, taken in whole before the CGI starts (the
 * responder decides; this holds the bytes): an unlinked file made at the
 * first byte, none for an empty body.
 */
export class SpoolFile {
  private fd: number | undefined;
  private size = 0;
  /** Bytes of a body handed to a program: on disk as its stdin until it exits (programExited), not when it starts. */
  private given = 0;

  /** `bytes` appended; false (nothing written) when bodies on disk would pass their limit. */
  write(bytes: Uint8Array): boolean {
    if (!reserveDisk(bytes.length)) return false;
    this.size += bytes.length; // counted from here: close() gives it back however the write ends
    this.fd ??= bodyFile();
    writeAt(this.fd, bytes, this.size - bytes.length);
    return true;
  }

  /** The file rewound, for the CGI's stdin ("ignore": nothing was written); the caller closes it once the CGI has it. */
  take(): number | "ignore" {
    const fd = this.fd;
    this.fd = undefined;
    this.programExited(); // a kept connection's next request: the last one's program has gone
    this.given = this.size;
    this.size = 0;
    if (fd === undefined) return "ignore";
    rewind(fd);
    return fd;
  }

  /** The program that was handed the body has exited, or never started: its file has gone. */
  programExited(): void {
    releaseDisk(this.given);
    this.given = 0;
  }

  close(): void {
    if (this.fd !== undefined) close(this.fd);
    this.fd = undefined;
    releaseDisk(this.size);
    this.size = 0;
    this.programExited();
  }
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
    if (!reserveDisk(bytes.length)) throw new DiskLimit("request bodies on disk are at their limit: connection dropped");
    this.writeTo += bytes.length; // counted from here: clear() gives it back however the write ends
    this.file ??= bodyFile();
    writeAt(this.file, bytes, this.writeTo - bytes.length);
  }

  /** The next bytes to give, still queued until take() says how many went; undefined when empty. */
  head(): Uint8Array | undefined {
    if (this.chunks.length === 0 && this.file !== undefined && this.writeTo > this.readFrom) {
      const piece = new Uint8Array(Math.min(READ_BYTES, this.writeTo - this.readFrom));
      const n = fs().readSync(this.file, piece, 0, piece.length, this.readFrom);
      if (n <= 0) throw new Error("the held body's file ended early");
      this.readFrom += n;
      this.chunks.push(piece.subarray(0, n));
      this.memory += n;
      if (this.readFrom === this.writeTo) {
        fs().ftruncateSync(this.file, 0); // its blocks back: the next bytes start it again
        releaseDisk(this.writeTo);
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
    releaseDisk(this.writeTo);
    this.readFrom = this.writeTo = 0;
  }
}
