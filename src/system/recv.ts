// recv(2) with flags, for reading an SCGI header exactly (MSG_PEEK to see
// the length prefix, MSG_WAITALL for the rest) and never a byte of the body
// a program will read from the same socket; and poll(2), for a worker to
// see whether connections wait on its listener. Its own dlopen handle (the
// same libc) keeps src/system/libc.ts untouched while others edit it.
import { dlopen, FFIType } from "bun:ffi";
import { EAGAIN, EINTR, errno, SysError } from "./libc.ts";

const lib = dlopen("libc.so.6", {
  recv: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i64_fast },
  poll: { args: [FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
}).symbols;

export const MSG_PEEK = 2;
export const MSG_WAITALL = 0x100;

/**
 * One recv into `buf`; returns the byte count (0 at EOF). Retries EINTR.
 * Throws SysError (EAGAIN when the socket's SO_RCVTIMEO passed).
 */
export function recv(fd: number, buf: Uint8Array, flags: number): number {
  for (;;) {
    const n = Number(lib.recv(fd, buf, buf.length, flags));
    if (n >= 0) return n;
    const code = errno();
    if (code !== EINTR) throw new SysError("recv", code);
  }
}

/** Fills `buf` exactly; false when the peer ended first. MSG_WAITALL may still return short (timeout, signal). */
export function recvExactly(fd: number, buf: Uint8Array): boolean {
  let got = 0;
  while (got < buf.length) {
    const n = recv(fd, buf.subarray(got), MSG_WAITALL);
    if (n === 0) return false;
    got += n;
  }
  return true;
}

const POLLIN = 1;

/** Whether `fd` has something to read now (for a listener: a connection waiting). Never blocks. */
export function readable(fd: number): boolean {
  const pollfd = new Int32Array([fd, POLLIN]); // { int fd; short events; short revents }
  if (lib.poll(pollfd, 1, 0) <= 0) return false;
  return ((pollfd[1] >>> 16) & POLLIN) !== 0;
}

export { EAGAIN };
