// A listener's and a connection's socket: accept, the listener's options
// and queue, send and recv, half-close, the addresses and credentials of
// each end, a TCP connection's idle times. How each call reports failure:
// ffi.ts.
import { check, EAGAIN, EINTR, lib, orErrno, SysError } from "./ffi.ts";
import { decodeSockaddr, type Endpoint } from "./sockaddr.ts";

export type { Endpoint } from "./sockaddr.ts";

/** SOCK_STREAM, SOCK_CLOEXEC (O_CLOEXEC's value) and SOCK_NONBLOCK, as socket(2) and accept4(2) take them. */
export const SOCK_STREAM = 1;
export const SOCK_CLOEXEC = 0o2000000;
export const SOCK_NONBLOCK = 0o4000;
export const SOL_SOCKET = 1;
const SO_TYPE = 3;
const SO_LINGER = 13;
const SO_PEERCRED = 17;
const SO_RCVTIMEO = 20;
const SO_SNDTIMEO = 21;
const SO_ACCEPTCONN = 30;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const TCP_DEFER_ACCEPT = 9;
const TCP_INFO = 11;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;
export const MSG_PEEK = 2;
export const MSG_DONTWAIT = 0x40;
export const MSG_WAITALL = 0x100;
export const MSG_NOSIGNAL = 0x4000;
const MSG_MORE = 0x8000;

/**
 * A connection from a listener, close-on-exec: the descriptor, or -errno
 * (-EAGAIN from a non-blocking listener: another worker took it).
 * `nonBlocking` only where the worker alone will use the connection.
 */
export function tryAccept(listenFd: number, nonBlocking = false): number {
  return orErrno(lib().accept4(listenFd, null, null, SOCK_CLOEXEC | (nonBlocking ? SOCK_NONBLOCK : 0)));
}

/** listen() again on a listening socket only changes its backlog (the kernel caps it at somaxconn). */
export function setBacklog(fd: number, backlog: number): void {
  check("listen", lib().listen(fd, backlog));
}

/**
 * TCP_DEFER_ACCEPT: the kernel completes the handshake but keeps the
 * connection from accept() until data arrives (or `secs` pass).
 */
export function setDeferAccept(fd: number, secs: number): void {
  check("setsockopt", lib().setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, new Int32Array([Math.ceil(secs)]), 4));
}

/** What a descriptor is, for a socket a service manager passed: a stream socket, and listening. */
export function socketKind(fd: number): { stream: boolean; listening: boolean } {
  const value = new Int32Array(1);
  const len = new Uint32Array([4]);
  check("getsockopt", lib().getsockopt(fd, SOL_SOCKET, SO_TYPE, value, len));
  const stream = value[0] === SOCK_STREAM;
  check("getsockopt", lib().getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, value, len));
  return { stream, listening: value[0] === 1 };
}

/** struct tcp_info (linux/tcp.h), as 26 u32 words. */
function tcpInfo(fd: number): Uint32Array {
  const info = new Uint32Array(26);
  const len = new Uint32Array([info.byteLength]);
  check("getsockopt", lib().getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, len));
  return info;
}

/**
 * A TCP listener's accept queue, from struct tcp_info: on a LISTEN socket
 * the kernel reports the connections waiting to be accepted in
 * tcpi_unacked (offset 24) and the backlog in tcpi_sacked (offset 28).
 */
export function acceptQueue(fd: number): { waiting: number; backlog: number } {
  const info = tcpInfo(fd);
  return { waiting: info[24 / 4], backlog: info[28 / 4] };
}

/**
 * Milliseconds since data last moved each way on a TCP connection, from
 * struct tcp_info: eight u8 fields, then u32 rto, ato, snd_mss, rcv_mss,
 * unacked, sacked, lost, retrans, fackets (offsets 8-40), last_data_sent
 * at 44, last_ack_sent at 48, last_data_recv at 52.
 */
export function tcpIdle(fd: number): { sentMs: number; receivedMs: number } {
  const info = tcpInfo(fd);
  return { sentMs: info[44 / 4], receivedMs: info[52 / 4] };
}

/** Best effort: a socket already gone has nothing left to shut. */
export function shutdown(fd: number, how: number): void {
  lib().shutdown(fd, how);
}

/** SO_LINGER 0: close() resets the connection (a peer that stopped reading would never take a FIN). Best effort. */
export function resetOnClose(fd: number): void {
  lib().setsockopt(fd, SOL_SOCKET, SO_LINGER, new Int32Array([1, 0]), 8);
}

/**
 * TCP_NODELAY on: what MSG_MORE or SPLICE_F_MORE held back goes now (the
 * kernel pushes pending frames). Best effort: on a socket that is not TCP
 * (a UNIX socket) nothing is held.
 */
export function pushPending(fd: number): void {
  lib().setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, new Int32Array([1]), 4);
}

/** SO_RCVTIMEO on a connection: its reads fail with EAGAIN after `ms` without data. 0: never. */
export function setReceiveTimeout(fd: number, ms: number): void {
  check("setsockopt", lib().setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeval(ms), 16));
}

/**
 * SO_SNDTIMEO on a connection: a blocking write the peer takes nothing of
 * for `ms` fails with EAGAIN (one that sent some returns that count). It is
 * the socket's, so a program given the connection has it too. 0: never.
 */
export function setSendTimeout(fd: number, ms: number): void {
  check("setsockopt", lib().setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, timeval(ms), 16));
}

const timeval = (ms: number) => new BigInt64Array([BigInt(Math.floor(ms / 1000)), BigInt(Math.round(ms % 1000) * 1000)]);

function sockaddrOf(name: "getsockname" | "getpeername", fd: number): Endpoint {
  const sa = new Uint8Array(128);
  const len = new Uint32Array([128]);
  check(name, lib()[name](fd, sa, len));
  return decodeSockaddr(sa, len[0]);
}

export const localEndpoint = (fd: number): Endpoint => sockaddrOf("getsockname", fd);
export const remoteEndpoint = (fd: number): Endpoint => sockaddrOf("getpeername", fd);

/** pid, uid and gid of the process at the other end of a UNIX socket. */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  const cred = new Int32Array(3);
  const len = new Uint32Array([12]);
  check("getsockopt", lib().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, len));
  return { pid: cred[0], uid: cred[1], gid: cred[2] };
}

/**
 * One non-blocking send (MSG_DONTWAIT; MSG_MORE: more follows, as a record
 * header before the content spliced after it; MSG_NOSIGNAL: a peer gone is
 * -EPIPE, not a SIGPIPE): bytes sent or -errno.
 */
export function trySend(fd: number, buf: Uint8Array, more: boolean): number {
  return orErrno(Number(lib().send(fd, buf, buf.length, MSG_DONTWAIT | MSG_NOSIGNAL | (more ? MSG_MORE : 0))));
}

/** One byte on a socket (MSG_NOSIGNAL). Best effort: a peer that is gone (EPIPE) has nobody to tell. */
export function sendByte(fd: number, byte: number): void {
  lib().send(fd, new Uint8Array([byte]), 1, MSG_NOSIGNAL);
}

/** Writes all of `text` to a socket, without SIGPIPE if the other end is gone (that is SysError EPIPE here). */
export function sendAll(fd: number, text: string): void {
  let bytes = new TextEncoder().encode(text);
  while (bytes.length > 0) {
    const n = orErrno(Number(lib().send(fd, bytes, bytes.length, MSG_NOSIGNAL)));
    if (n === -EINTR) continue;
    if (n < 0) throw new SysError("send", -n);
    bytes = bytes.subarray(n);
  }
}

/** One recv into `buf` (MSG_DONTWAIT: -EAGAIN when nothing waits; MSG_PEEK: left there): bytes, 0 at EOF, or -errno. */
export function tryRecv(fd: number, buf: Uint8Array, flags: number): number {
  return orErrno(Number(lib().recv(fd, buf, buf.length, flags)));
}

/**
 * One recv that fails with SysError EAGAIN at `deadline` (a Date.now()
 * time) however the bytes trickle in: SO_RCVTIMEO is set to the time left
 * before each call, as a fixed one would restart with every byte (a
 * slowloris). An SCGI header is read exactly this way: MSG_PEEK to see its
 * length prefix, MSG_WAITALL for the rest, never a byte of the body.
 * Returns the byte count (0 at EOF); retries EINTR.
 */
export function recvBefore(fd: number, buf: Uint8Array, flags: number, deadline: number): number {
  const left = deadline - Date.now();
  if (left <= 0) throw new SysError("recv", EAGAIN);
  setReceiveTimeout(fd, left);
  for (;;) {
    const n = tryRecv(fd, buf, flags);
    if (n >= 0) return n;
    if (n !== -EINTR) throw new SysError("recv", -n);
  }
}

/** Fills `buf` exactly by `deadline`; false when the peer ended first. MSG_WAITALL may still return short (timeout, signal). */
export function recvExactly(fd: number, buf: Uint8Array, deadline: number): boolean {
  let got = 0;
  while (got < buf.length) {
    const n = recvBefore(fd, buf.subarray(got), MSG_WAITALL, deadline);
    if (n === 0) return false;
    got += n;
  }
  return true;
}
