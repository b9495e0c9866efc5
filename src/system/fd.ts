// Descriptors of any kind: closing and copying them, their flags, pipes and
// their sizes, and the pool's non-blocking read, write and splice. How each
// call reports failure: ffi.ts.
import { check, EINTR, errno, lib, O_CLOEXEC, orErrno, SysError } from "./ffi.ts";

const F_GETFD = 1;
const F_SETFD = 2;
const F_GETFL = 3;
const F_SETFL = 4;
const F_DUPFD_CLOEXEC = 1030;
const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;
const FD_CLOEXEC = 1;
const FIONREAD = 0x541b;
const O_NONBLOCK = 0o4000;
const O_RDONLY = 0;
const O_WRONLY = 1;
const RLIMIT_NOFILE = 7;

/** Best effort: Linux has closed the descriptor whatever close(2) says. */
export function close(fd: number): void {
  lib().close(fd);
}

/** Makes `to` a copy of `from` (USR1's reopened log onto stdout and stderr). */
export function dup2(from: number, to: number): void {
  for (;;) {
    if (lib().dup2(from, to) >= 0) return;
    const code = errno();
    if (code !== EINTR) throw new SysError("dup2", code);
  }
}

/** A close-on-exec copy, so programs started later never inherit it. */
export function dupCloexec(fd: number): number {
  return check("fcntl", lib().fcntl(fd, F_DUPFD_CLOEXEC, 3));
}

export function setCloexec(fd: number): void {
  check("fcntl", lib().fcntl(fd, F_SETFD, lib().fcntl(fd, F_GETFD, 0) | FD_CLOEXEC));
}

/** The flag lives on the open file, so it changes it for every process that holds it. */
export function setBlocking(fd: number): void {
  check("fcntl", lib().fcntl(fd, F_SETFL, lib().fcntl(fd, F_GETFL, 0) & ~O_NONBLOCK));
}

export function setNonBlocking(fd: number): void {
  check("fcntl", lib().fcntl(fd, F_SETFL, lib().fcntl(fd, F_GETFL, 0) | O_NONBLOCK));
}

/**
 * A pipe, both ends close-on-exec: [read end, write end]. `nonBlocking`:
 * that end (ours; the other goes to a program, which expects blocking I/O)
 * is made non-blocking in one fcntl, its flags being known.
 */
export function pipe(nonBlocking?: "read" | "write"): [number, number] {
  const fds = new Int32Array(2);
  check("pipe2", lib().pipe2(fds, O_CLOEXEC));
  if (nonBlocking) {
    const [fd, mode] = nonBlocking === "read" ? [fds[0], O_RDONLY] : [fds[1], O_WRONLY];
    check("fcntl", lib().fcntl(fd, F_SETFL, mode | O_NONBLOCK));
  }
  return [fds[0], fds[1]];
}

/**
 * Grows a pipe to `bytes` (F_SETPIPE_SZ): each splice(2) then moves that
 * much instead of 64 KiB. Best effort: a pipe keeps its size where the
 * kernel refuses (an unprivileged user over pipe-user-pages-soft).
 */
export function setPipeSize(fd: number, bytes: number): void {
  lib().fcntl(fd, F_SETPIPE_SZ, bytes);
}

/** How many bytes wait to be read in a pipe (ioctl FIONREAD). */
export function pipeBytes(fd: number): number {
  const count = new Int32Array(1);
  check("ioctl", lib().ioctl(fd, FIONREAD, count));
  return count[0];
}

/** A pipe's capacity (F_GETPIPE_SZ). */
export function pipeSize(fd: number): number {
  return check("fcntl", lib().fcntl(fd, F_GETPIPE_SZ, 0));
}

/** One read(2) from a non-blocking descriptor: bytes read, 0 at EOF, -errno (-EAGAIN: nothing there now). */
export function tryRead(fd: number, buf: Uint8Array): number {
  return orErrno(Number(lib().read(fd, buf, buf.length)));
}

/** One write(2) to a non-blocking descriptor (a pipe): bytes written or -errno (-EAGAIN: full now, -EPIPE: no reader). */
export function tryWrite(fd: number, buf: Uint8Array): number {
  return orErrno(Number(lib().write(fd, buf, buf.length)));
}

export const SPLICE_F_MOVE = 1;
export const SPLICE_F_NONBLOCK = 2;
export const SPLICE_F_MORE = 4;

/** Moves up to `length` bytes between a pipe and another descriptor inside the kernel: bytes moved, 0 at EOF, -errno. */
export function trySplice(from: number, to: number, length: number, flags: number): number {
  return orErrno(Number(lib().splice(from, null, to, null, length, flags)));
}

/** The soft limit on open descriptors (RLIMIT_NOFILE). */
export function descriptorLimit(): number {
  const limit = new BigUint64Array(2);
  check("getrlimit", lib().getrlimit(RLIMIT_NOFILE, limit));
  return limit[0] > 1n << 31n ? 2 ** 31 : Number(limit[0]);
}
