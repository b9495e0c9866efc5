// Every libc call in one import, while modules still import it from here:
// the calls are written by concern in ffi.ts (the table, and the rule for
// how a call reports failure), fd.ts, poll.ts, socket.ts, connect.ts,
// process.ts, spawn.ts, users.ts and files.ts. Import from those.
import { EINTR, SysError } from "./ffi.ts";
import { tryRead, trySplice, tryWrite } from "./fd.ts";
import { tryEpollWait, tryPoll } from "./poll.ts";
import { tryAccept, tryRecv, trySend } from "./socket.ts";

export { ECONNABORTED, EAGAIN, EINTR, EINVAL, ENAMETOOLONG, EPIPE, EPROTO, errno, strerror, SysError } from "./ffi.ts";
export * from "./connect.ts";
export * from "./fd.ts";
export * from "./files.ts";
export * from "./poll.ts";
export * from "./process.ts";
export * from "./socket.ts";
export * from "./spawn.ts";
export * from "./users.ts";

// The old names of the try* calls, kept until their callers are renamed:
// each is the try* call itself, returning -errno.
export const readSome = tryRead;
export const writeSome = tryWrite;
export const sendSome = trySend;
export const splice = trySplice;
export const poll = tryPoll;
export const epollWait = tryEpollWait;

/** The old accept: tryAccept, but throwing SysError("accept") (EAGAIN included). */
export function accept(listenFd: number, nonBlocking = false): number {
  const fd = tryAccept(listenFd, nonBlocking);
  if (fd < 0) throw new SysError("accept", -fd);
  return fd;
}

/** The old recv: tryRecv retried on EINTR, throwing SysError("recv") for any other failure (EAGAIN included). */
export function recv(fd: number, buf: Uint8Array, flags: number): number {
  for (;;) {
    const n = tryRecv(fd, buf, flags);
    if (n >= 0) return n;
    if (n !== -EINTR) throw new SysError("recv", -n);
  }
}
