// Waiting on descriptors with the JavaScript thread blocked: poll(2) for a
// pool worker's connection and its pipes, epoll for an idle worker (one
// wait over the listener, the control socket and a pidfd). How each call
// reports failure: ffi.ts.
import { check, lib, O_CLOEXEC, orErrno } from "./ffi.ts";

export const POLLIN = 0x1;
export const POLLOUT = 0x4;
/** In revents only: the other end is closed (a pipe's last writer has gone). */
export const POLLHUP = 0x10;

/**
 * poll(2) over `fds` (struct pollfd: int fd; short events, revents) for up
 * to `timeoutMs` (-1: no limit). Blocks the JavaScript thread. Returns how
 * many are ready, or -errno (-EINTR: a signal came first).
 */
export function tryPoll(fds: Int32Array, count: number, timeoutMs: number): number {
  return orErrno(lib().poll(fds, count, timeoutMs));
}

/** One array for every check (a worker makes several per connection); JavaScript runs one at a time. */
const readableCheck = new Int32Array(2);

/** Readable now (data, end of file, or an error to report), without waiting; a poll that fails answers no. */
export function isReadable(fd: number): boolean {
  readableCheck[0] = fd;
  readableCheck[1] = POLLIN;
  return tryPoll(readableCheck, 1, 0) > 0;
}

export const EPOLLIN = 0x1;
export const EPOLLEXCLUSIVE = 1 << 28;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CLOEXEC = O_CLOEXEC;
/** struct epoll_event is packed on x86-64 (12 bytes), naturally aligned elsewhere (16). */
export const EPOLL_EVENT_SIZE = process.arch === "x64" ? 12 : 16;
export const EPOLL_DATA_OFFSET = process.arch === "x64" ? 4 : 8;

export function epollCreate(): number {
  return check("epoll_create1", lib().epoll_create1(EPOLL_CLOEXEC));
}

/** Watches `fd` for `events`; the event's data is the descriptor number. */
export function epollAdd(epfd: number, fd: number, events: number): void {
  const event = new DataView(new ArrayBuffer(EPOLL_EVENT_SIZE));
  event.setUint32(0, events, true);
  event.setUint32(EPOLL_DATA_OFFSET, fd, true);
  check("epoll_ctl", lib().epoll_ctl(epfd, EPOLL_CTL_ADD, fd, new Uint8Array(event.buffer)));
}

/** Stops watching `fd` (a descriptor kept open after its watch, such as a pidfd still to be waited on). */
export function epollDelete(epfd: number, fd: number): void {
  check("epoll_ctl", lib().epoll_ctl(epfd, EPOLL_CTL_DEL, fd, null));
}

/** Blocks the JavaScript thread until an event (or a signal: -EINTR). Returns the count, or -errno. */
export function tryEpollWait(epfd: number, events: Uint8Array, max: number, timeoutMs: number): number {
  return orErrno(lib().epoll_wait(epfd, events, max, timeoutMs));
}
