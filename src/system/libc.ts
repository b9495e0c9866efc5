// The few libc calls Bun does not expose: accept on an inherited listening
// descriptor, epoll and poll waits, pipes, splice and pidfds for the pool,
// descriptor flags, half-close, socket addresses, a client socket bound to a
// local address, parent-death signal, privileges and the user and group
// databases (through NSS, as id(1) sees them).
// bun:ffi works inside the compiled executable (SPEC section 7).
import { CString, dlopen, FFIType, ptr as pointerTo, read, type Pointer } from "bun:ffi";
import { unlinkSync } from "node:fs";
import { AF_UNIX, decodeSockaddr, inetSockaddr, unixSockaddr, type Endpoint } from "./sockaddr.ts";

export { AF_INET, AF_INET6, type Endpoint } from "./sockaddr.ts";

const { i32, u32, u64, i64_fast, ptr } = FFIType;

function open() {
  return dlopen("libc.so.6", {
  accept4: { args: [i32, ptr, ptr, i32], returns: i32 },
  bind: { args: [i32, ptr, u32], returns: i32 },
  close: { args: [i32], returns: i32 },
  connect: { args: [i32, ptr, u32], returns: i32 },
  dup2: { args: [i32, i32], returns: i32 },
  epoll_create1: { args: [i32], returns: i32 },
  epoll_ctl: { args: [i32, i32, i32, ptr], returns: i32 },
  epoll_wait: { args: [i32, ptr, i32, i32], returns: i32 },
  execve: { args: [ptr, ptr, ptr], returns: i32 },
  fcntl: { args: [i32, i32, i32], returns: i32 },
  geteuid: { args: [], returns: u32 },
  getpeername: { args: [i32, ptr, ptr], returns: i32 },
  getgrnam_r: { args: [ptr, ptr, ptr, u64, ptr], returns: i32 },
  getppid: { args: [], returns: i32 },
  getpwnam_r: { args: [ptr, ptr, ptr, u64, ptr], returns: i32 },
  getpwuid_r: { args: [u32, ptr, ptr, u64, ptr], returns: i32 },
  getrlimit: { args: [i32, ptr], returns: i32 },
  getsockname: { args: [i32, ptr, ptr], returns: i32 },
  getsockopt: { args: [i32, i32, i32, ptr, ptr], returns: i32 },
  initgroups: { args: [ptr, u32], returns: i32 },
  ioctl: { args: [i32, u64, ptr], returns: i32 },
  listen: { args: [i32, i32], returns: i32 },
  lseek: { args: [i32, i64_fast, i32], returns: i64_fast },
  open: { args: [ptr, i32, u32], returns: i32 },
  pidfd_open: { args: [i32, u32], returns: i32 },
  pipe2: { args: [ptr, i32], returns: i32 },
  poll: { args: [ptr, u64, i32], returns: i32 },
  read: { args: [i32, ptr, u64], returns: i64_fast },
  prctl: { args: [i32, i32, i32, i32, i32], returns: i32 },
  recv: { args: [i32, ptr, u64, i32], returns: i64_fast },
  send: { args: [i32, ptr, u64, i32], returns: i64_fast },
  sendto: { args: [i32, ptr, u32, i32, ptr, u32], returns: i32 },
  setgid: { args: [u32], returns: i32 },
  setgroups: { args: [u32, ptr], returns: i32 },
  setsockopt: { args: [i32, i32, i32, ptr, u32], returns: i32 },
  setuid: { args: [u32], returns: i32 },
  shutdown: { args: [i32, i32], returns: i32 },
  socket: { args: [i32, i32, i32], returns: i32 },
  socketpair: { args: [i32, i32, i32, ptr], returns: i32 },
  // Offsets null (pipes and sockets have none); i64_fast returns a number, plain i64 a BigInt.
  splice: { args: [i32, ptr, i32, ptr, u64, u32], returns: i64_fast },
  strerror: { args: [i32], returns: ptr },
  umask: { args: [u32], returns: u32 },
  waitid: { args: [i32, i32, ptr, i32], returns: i32 },
  waitpid: { args: [i32, ptr, i32], returns: i32 },
  write: { args: [i32, ptr, u64], returns: i64_fast },
  __errno_location: { args: [], returns: ptr },
}).symbols;
}
// Opened at the first call, not at start: bun:ffi compiles a trampoline per
// symbol when it opens the library (1.5 ms for these), which -version,
// --help and a usage error never need.
let symbols: ReturnType<typeof open> | undefined;
const lib = (): ReturnType<typeof open> => (symbols ??= open());

const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SOCK_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
const F_GETFD = 1;
const F_SETFD = 2;
const F_GETFL = 3;
const F_SETFL = 4;
const F_DUPFD_CLOEXEC = 1030;
const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;
const FIONREAD = 0x541b;
const MSG_MORE = 0x8000;
const FD_CLOEXEC = 1;
const O_NONBLOCK = 0o4000;
const O_RDONLY = 0;
const O_WRONLY = 1;
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const SO_RCVTIMEO = 20;
const SO_LINGER = 13;
const PR_SET_PDEATHSIG = 1;
const IPPROTO_TCP = 6;
const TCP_DEFER_ACCEPT = 9;
const TCP_INFO = 11;
const RLIMIT_NPROC = 6;
const TCP_NODELAY = 1;
const RLIMIT_NOFILE = 7;
const PR_SET_CHILD_SUBREAPER = 36;
const WNOHANG = 1;
const WEXITED = 4;
const WNOWAIT = 0x01000000;
const P_ALL = 0;
const P_PID = 1;
const CLD_EXITED = 1;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;
export const EINTR = 4;
export const EAGAIN = 11;
export const EINVAL = 22;
export const EPIPE = 32;
export const ENAMETOOLONG = 36;
export const EPROTO = 71;
export const ECONNABORTED = 103;

/**
 * A failed libc call, named as tcpserver names it ("unable to accept:
 * Too many open files"); `reason` is the C library's text alone, for the
 * messages socket(1) words its own way ("client socket: Connection refused").
 */
export class SysError extends Error {
  readonly reason: string;
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    const reason = strerror(errno);
    super(`unable to ${call}: ${reason}`);
    this.reason = reason;
  }
}

export function errno(): number {
  return read.i32(lib().__errno_location() as Pointer, 0);
}

export function strerror(code: number): string {
  return new CString(lib().strerror(code) as Pointer).toString();
}

function check(call: string, result: number): number {
  if (result < 0) throw new SysError(call, errno());
  return result;
}

/**
 * A connection from a non-blocking listener (EAGAIN: another worker took
 * it). `nonBlocking` only where the worker alone will use the connection.
 */
export function accept(listenFd: number, nonBlocking = false): number {
  return check("accept", lib().accept4(listenFd, null, null, SOCK_CLOEXEC | (nonBlocking ? SOCK_NONBLOCK : 0)));
}

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

/** SO_LINGER 0: close() resets the connection (a peer that stopped reading would never take a FIN). */
export function resetOnClose(fd: number): void {
  lib().setsockopt(fd, SOL_SOCKET, SO_LINGER, new Int32Array([1, 0]), 8);
}

export function shutdown(fd: number, how: number): void {
  lib().shutdown(fd, how);
}

/** listen() again on a listening socket only changes its backlog (the kernel caps it at somaxconn). */
export function setBacklog(fd: number, backlog: number): void {
  check("listen", lib().listen(fd, backlog));
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

/** A connected pair of UNIX stream sockets, close-on-exec. */
export function socketPair(): [number, number] {
  const fds = new Int32Array(2);
  check("socketpair", lib().socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
  return [fds[0], fds[1]];
}

/** One byte on a socket; MSG_NOSIGNAL: a peer that is gone gives EPIPE, not a SIGPIPE (which ends socket). */
export function sendByte(fd: number, byte: number): boolean {
  return lib().send(fd, new Uint8Array([byte]), 1, MSG_NOSIGNAL) === 1;
}

/** A descriptor that becomes readable when process `pid` ends (close-on-exec). */
export function pidfdOpen(pid: number): number {
  return check("pidfd_open", lib().pidfd_open(pid, 0));
}

const SEEK_SET = 0;
const O_RDWR = 2;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
/** __O_TMPFILE with O_DIRECTORY, whose value differs by architecture. */
const O_TMPFILE = 0o20000000 | (process.arch === "arm64" ? 0o40000 : 0o200000);
const EISDIR = 21;
const EOPNOTSUPP = 95;

/**
 * A file with no name in `dir`, read-write, close-on-exec, mode 0600
 * (open(2) O_TMPFILE): a request body is held there, on disk rather than
 * in a worker's memory, then given to the CGI as its stdin (a regular
 * file: it reads EOF at the body's end). Its blocks go at its last close,
 * whatever way the process ends. A filesystem without O_TMPFILE (EOPNOTSUPP;
 * EISDIR from a kernel before 3.11): a file made under a random name and
 * unlinked at once, as nginx's client_body_temp_path is.
 */
export function unlinkedFile(dir: string): number {
  const fd = lib().open(Buffer.from(`${dir}\0`), O_TMPFILE | O_RDWR | O_CLOEXEC, 0o600);
  if (fd >= 0) return fd;
  const code = errno();
  if (code !== EOPNOTSUPP && code !== EISDIR) throw new SysError(`create a file in ${dir}`, code);
  const path = `${dir}/socket-body-${process.pid}-${crypto.randomUUID()}`;
  const named = check(`create ${path}`, lib().open(Buffer.from(`${path}\0`), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0o600));
  unlinkSync(path);
  return named;
}

/** Back to the start of a file (the spooled body, before the CGI reads it). */
export function rewind(fd: number): void {
  check("lseek", Number(lib().lseek(fd, 0, SEEK_SET)));
}

export const SPLICE_F_MOVE = 1;
export const SPLICE_F_NONBLOCK = 2;
export const SPLICE_F_MORE = 4;

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
export function readSome(fd: number, buf: Uint8Array): number {
  const n = Number(lib().read(fd, buf, buf.length));
  return n < 0 ? -errno() : n;
}

/** One write(2) to a non-blocking descriptor (a pipe): bytes written or -errno (-EAGAIN: full now, -EPIPE: no reader). */
export function writeSome(fd: number, buf: Uint8Array): number {
  const n = Number(lib().write(fd, buf, buf.length));
  return n < 0 ? -errno() : n;
}

/**
 * One non-blocking send (MSG_DONTWAIT; MSG_MORE: more follows, as a record
 * header before the content spliced after it; MSG_NOSIGNAL): bytes sent or -errno.
 */
export function sendSome(fd: number, buf: Uint8Array, more: boolean): number {
  const n = Number(lib().send(fd, buf, buf.length, MSG_DONTWAIT | MSG_NOSIGNAL | (more ? MSG_MORE : 0)));
  return n < 0 ? -errno() : n;
}

/** Moves up to `length` bytes between a pipe and another descriptor inside the kernel: bytes moved, 0 at EOF, -errno. */
export function splice(from: number, to: number, length: number, flags: number): number {
  const moved = Number(lib().splice(from, null, to, null, length, flags));
  return moved < 0 ? -errno() : moved;
}

export const POLLIN = 0x1;
export const POLLOUT = 0x4;
/** In revents only: the other end is closed (a pipe's last writer has gone). */
export const POLLHUP = 0x10;

/**
 * poll(2) over `fds` (struct pollfd: int fd; short events, revents) for up
 * to `timeoutMs` (-1: no limit). Blocks the JavaScript thread. Returns how
 * many are ready, or -errno.
 */
export function poll(fds: Int32Array, count: number, timeoutMs: number): number {
  const ready = lib().poll(fds, count, timeoutMs);
  return ready < 0 ? -errno() : ready;
}

export const MSG_PEEK = 2;
export const MSG_WAITALL = 0x100;
export const MSG_DONTWAIT = 0x40;

/**
 * One recv into `buf` (an SCGI header is read exactly: MSG_PEEK to see its
 * length prefix, MSG_WAITALL for the rest, never a byte of the body);
 * returns the byte count (0 at EOF). Retries EINTR. Throws SysError
 * (EAGAIN when the socket's SO_RCVTIMEO passed).
 */
export function recv(fd: number, buf: Uint8Array, flags: number): number {
  for (;;) {
    const n = Number(lib().recv(fd, buf, buf.length, flags));
    if (n >= 0) return n;
    const code = errno();
    if (code !== EINTR) throw new SysError("recv", code);
  }
}

/**
 * One recv that fails with EAGAIN at `deadline` (a Date.now() time) however
 * the bytes trickle in: SO_RCVTIMEO is set to the time left before each
 * call, as a fixed one would restart with every byte (a slowloris).
 */
export function recvBefore(fd: number, buf: Uint8Array, flags: number, deadline: number): number {
  const left = deadline - Date.now();
  if (left <= 0) throw new SysError("recv", EAGAIN);
  setReceiveTimeout(fd, left);
  return recv(fd, buf, flags);
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

/** Readable now (data, end of file, or an error to report), without waiting. */
const readableCheck = new Int32Array(2);
export function isReadable(fd: number): boolean {
  // One array for every check (a worker makes several per connection); JavaScript runs one at a time.
  readableCheck[0] = fd;
  readableCheck[1] = POLLIN;
  return poll(readableCheck, 1, 0) > 0;
}

export const EPOLLIN = 0x1;
export const EPOLLEXCLUSIVE = 1 << 28;
const EPOLL_CTL_ADD = 1;
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

const EPOLL_CTL_DEL = 2;

/** Stops watching `fd` (a descriptor kept open after its watch, such as a pidfd still to be waited on). */
export function epollDelete(epfd: number, fd: number): void {
  check("epoll_ctl", lib().epoll_ctl(epfd, EPOLL_CTL_DEL, fd, null));
}

/** Blocks the JavaScript thread until an event (or a signal: -EINTR). Returns the count, or -errno. */
export function epollWait(epfd: number, events: Uint8Array, max: number, timeoutMs: number): number {
  const ready = lib().epoll_wait(epfd, events, max, timeoutMs);
  return ready < 0 ? -errno() : ready;
}

/** SO_RCVTIMEO on a connection: its reads fail with EAGAIN after `ms` without data. 0: never. */
export function setReceiveTimeout(fd: number, ms: number): void {
  const tv = new BigInt64Array([BigInt(Math.floor(ms / 1000)), BigInt((ms % 1000) * 1000)]);
  check("setsockopt", lib().setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16));
}

export function getppid(): number {
  return lib().getppid();
}

/** The kernel sends `signal` to this process when its parent ends. */
export function dieWithParent(signal: number): void {
  check("prctl", lib().prctl(PR_SET_PDEATHSIG, signal, 0, 0, 0));
}

export function umask(mask: number): number {
  return lib().umask(mask);
}

/** A user as the passwd database has it. */
export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

const ERANGE = 34;

/**
 * One getpwnam_r/getpwuid_r/getgrnam_r call: `call(buf, size, result)` fills
 * `entry` (a struct passwd or group) with pointers into the buffer, which
 * grows while it is too small. Returns the buffer, to be kept while the
 * entry's strings are read; undefined when there is no such entry.
 */
function lookupEntry(what: string, call: (buf: Uint8Array, size: number, result: BigUint64Array) => number): Uint8Array | undefined {
  for (let size = 16384; ; size *= 2) {
    const buf = new Uint8Array(size);
    const result = new BigUint64Array(1);
    const code = call(buf, size, result);
    if (code === ERANGE && size < 1 << 24) continue;
    if (code !== 0) throw new SysError(what, code);
    return result[0] === 0n ? undefined : buf;
  }
}

const cString = (text: string): Uint8Array => new TextEncoder().encode(`${text}\0`);

/**
 * struct passwd on 64-bit glibc: char *pw_name, *pw_passwd; uid_t pw_uid
 * (offset 16); gid_t pw_gid (20); char *pw_gecos, *pw_dir, *pw_shell.
 */
function passwdEntry(entry: Uint8Array, buf: Uint8Array | undefined): PasswdEntry | undefined {
  if (buf === undefined) return undefined;
  const view = new DataView(entry.buffer);
  const name = new CString(Number(view.getBigUint64(0, true)) as Pointer).toString(); // a copy, read while buf lives
  return { name, uid: view.getUint32(16, true), gid: view.getUint32(20, true) };
}

export function getpwnam(name: string): PasswdEntry | undefined {
  const entry = new Uint8Array(48);
  return passwdEntry(entry, lookupEntry("getpwnam_r", (buf, size, result) => lib().getpwnam_r(cString(name), entry, buf, size, result)));
}

export function getpwuid(uid: number): PasswdEntry | undefined {
  const entry = new Uint8Array(48);
  return passwdEntry(entry, lookupEntry("getpwuid_r", (buf, size, result) => lib().getpwuid_r(uid, entry, buf, size, result)));
}

/** A group's gid; struct group: char *gr_name, *gr_passwd; gid_t gr_gid (offset 16); char **gr_mem. */
export function getgrnam(name: string): number | undefined {
  const entry = new Uint8Array(32);
  const found = lookupEntry("getgrnam_r", (buf, size, result) => lib().getgrnam_r(cString(name), entry, buf, size, result));
  return found ? new DataView(entry.buffer).getUint32(16, true) : undefined;
}

export function geteuid(): number {
  return lib().geteuid();
}

/**
 * Supplementary groups first (while still root), then the gid, then the
 * uid: a named user gets its groups from the group database (initgroups),
 * anyone else `gid` alone, never root's.
 */
export function dropPrivileges(uid: number | undefined, gid: number, user: string | undefined): void {
  if (user !== undefined) check("initgroups", lib().initgroups(cString(user), gid));
  else check("setgroups", lib().setgroups(1, new Uint32Array([gid])));
  check("setgid", lib().setgid(gid));
  if (uid !== undefined) check("setuid", lib().setuid(uid));
}

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
 * A connected TCP socket (blocking connect, as socket(1) does it), bound
 * first to `localIp` when given. Bun.connect has no local-address option.
 */
export function connectInet(family: number, ip: string, port: number, localIp?: string): number {
  const fd = check("socket", lib().socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  try {
    if (localIp !== undefined) {
      const local = inetSockaddr(family, localIp, 0);
      if (!local) throw new SysError("bind", EINVAL);
      check("bind", lib().bind(fd, local, local.length));
    }
    const remote = inetSockaddr(family, ip, port);
    if (!remote) throw new SysError("connect", EINVAL);
    check("connect", lib().connect(fd, remote, remote.length));
    return fd;
  } catch (e) {
    lib().close(fd);
    throw e;
  }
}

export function connectUnix(path: string): number {
  const sa = unixSockaddr(path);
  if (!sa) throw new SysError("connect", ENAMETOOLONG);
  const fd = check("socket", lib().socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  try {
    check("connect", lib().connect(fd, sa, sa.length));
    return fd;
  } catch (e) {
    lib().close(fd);
    throw e;
  }
}

/** The soft limit on open descriptors (RLIMIT_NOFILE). */
export function descriptorLimit(): number {
  const limit = new BigUint64Array(2);
  check("getrlimit", lib().getrlimit(RLIMIT_NOFILE, limit));
  return limit[0] > 1n << 31n ? 2 ** 31 : Number(limit[0]);
}

/** Whether the soft limit on this user's processes and threads (RLIMIT_NPROC) is set. */
export function processLimitSet(): boolean {
  const limit = new BigUint64Array(2);
  check("getrlimit", lib().getrlimit(RLIMIT_NPROC, limit));
  return limit[0] !== 0xffffffffffffffffn; // RLIM_INFINITY
}

/**
 * TCP_DEFER_ACCEPT: the kernel completes the handshake but keeps the
 * connection from accept() until data arrives (or `secs` pass).
 */
export function setDeferAccept(fd: number, secs: number): void {
  check("setsockopt", lib().setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, new Int32Array([Math.ceil(secs)]), 4));
}

/**
 * Milliseconds since data last moved each way on a TCP connection, from
 * struct tcp_info (linux/tcp.h): eight u8 fields, then u32 rto, ato,
 * snd_mss, rcv_mss, unacked, sacked, lost, retrans, fackets (offsets 8-40),
 * last_data_sent at 44, last_ack_sent at 48, last_data_recv at 52.
 */
export function tcpIdle(fd: number): { sentMs: number; receivedMs: number } {
  const info = new Uint32Array(26);
  const len = new Uint32Array([info.byteLength]);
  check("getsockopt", lib().getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, len));
  return { sentMs: info[44 / 4], receivedMs: info[52 / 4] };
}

/**
 * A TCP listener's accept queue, from the same struct tcp_info: on a
 * LISTEN socket the kernel reports the connections waiting to be accepted
 * in tcpi_unacked (offset 24) and the backlog in tcpi_sacked (offset 28).
 */
export function acceptQueue(fd: number): { waiting: number; backlog: number } {
  const info = new Uint32Array(26);
  const len = new Uint32Array([info.byteLength]);
  check("getsockopt", lib().getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, len));
  return { waiting: info[24 / 4], backlog: info[28 / 4] };
}

/**
 * Orphans of our descendants become our children instead of init's, so we
 * can reap them and, at shutdown, find them (PR_SET_CHILD_SUBREAPER).
 */
export function becomeSubreaper(): void {
  check("prctl", lib().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0));
}

/**
 * The pid of some child that has ended and is not yet reaped, without
 * reaping it (waitid with WNOWAIT); 0 when there is none.
 */
export function peekEndedChild(): number {
  const info = new Int32Array(32); // siginfo_t is 128 bytes; si_pid is at byte 16 on 64-bit Linux
  if (lib().waitid(P_ALL, 0, info, WEXITED | WNOHANG | WNOWAIT) < 0) return 0; // ECHILD: no children at all
  return info[4];
}

/**
 * This child's exit status if it has exited (not killed by a signal), without
 * reaping it (waitid with WNOWAIT: Bun reaps its own); undefined otherwise. Never waits.
 */
export function exitedStatus(pid: number): number | undefined {
  const info = new Int32Array(32); // siginfo_t: si_code at byte 8, si_pid 16, si_status 24
  if (lib().waitid(P_PID, pid, info, WEXITED | WNOHANG | WNOWAIT) < 0 || info[4] !== pid) return undefined;
  return info[2] === CLD_EXITED ? info[6] : undefined;
}

/** TCP_NODELAY on: what MSG_MORE or SPLICE_F_MORE held back goes now (the kernel pushes pending frames). */
export function pushPending(fd: number): void {
  lib().setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, new Int32Array([1]), 4); // not TCP (a UNIX socket): nothing is held
}

/** Reaps this one child if it has ended; true if it was reaped. Never waits. */
export function reap(pid: number): boolean {
  return lib().waitpid(pid, new Int32Array(1), WNOHANG) === pid;
}

/** Writes to a socket without SIGPIPE if the other end is gone (that is EPIPE here). */
export function sendAll(fd: number, text: string): void {
  let bytes = new TextEncoder().encode(text);
  while (bytes.length > 0) {
    const n = Number(lib().send(fd, bytes, bytes.length, MSG_NOSIGNAL));
    if (n < 0 && errno() === EINTR) continue;
    check("send", n);
    bytes = bytes.subarray(n);
  }
}

/**
 * One datagram to a UNIX datagram socket (sd_notify's protocol): a path,
 * or with a leading "@" an abstract name.
 */
export function sendDatagram(path: string, message: string): void {
  const sa = unixSockaddr(path, path.startsWith("@"));
  if (!sa) throw new SysError("sendto", ENAMETOOLONG);
  const fd = check("socket", lib().socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  try {
    const bytes = new TextEncoder().encode(message);
    check("sendto", lib().sendto(fd, bytes, bytes.length, 0, sa, sa.length));
  } finally {
    lib().close(fd);
  }
}

const SO_TYPE = 3;
const SO_ACCEPTCONN = 30;

/** What a descriptor is, for a socket a service manager passed: a stream socket, and listening. */
export function socketKind(fd: number): { stream: boolean; listening: boolean } {
  const value = new Int32Array(1);
  const len = new Uint32Array([4]);
  check("getsockopt", lib().getsockopt(fd, SOL_SOCKET, SO_TYPE, value, len));
  const stream = value[0] === SOCK_STREAM;
  check("getsockopt", lib().getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, value, len));
  return { stream, listening: value[0] === 1 };
}

/** A NULL-terminated array of C strings; `keep` holds the strings alive for the call. */
function cStrings(strings: (string | Uint8Array)[], keep: Buffer[]): BigUint64Array {
  const table = new BigUint64Array(strings.length + 1);
  strings.forEach((s, i) => {
    const bytes = typeof s === "string" ? Buffer.from(`${s}\0`) : Buffer.concat([s, Buffer.from([0])]);
    keep.push(bytes);
    table[i] = BigInt(pointerTo(bytes));
  });
  return table;
}

/**
 * Replaces this process with `argv` (same pid, same descriptors but the
 * close-on-exec ones): what a service manager tracks stays the same. Only
 * returns by throwing.
 */
export function exec(path: string, argv: string[], env: Record<string, string | Uint8Array>): never {
  const keep: Buffer[] = [];
  const file = Buffer.from(`${path}\0`);
  const args = cStrings(argv, keep);
  // A value given as bytes goes as they are (a request's bytes that are not UTF-8: request/cgi.ts).
  const envp = cStrings(
    Object.entries(env).map(([k, v]) => (typeof v === "string" ? `${k}=${v}` : Buffer.concat([Buffer.from(`${k}=`), v]))),
    keep,
  );
  lib().execve(file, args, envp);
  throw new SysError("execve", errno());
}

// posix_spawn(3) for a pool worker's programs, in a table of its own: its
// closefrom action is glibc 2.34's, and where it is missing (dlopen fails)
// the caller starts programs with Bun.spawn as before.
function openSpawn() {
  return dlopen("libc.so.6", {
    posix_spawn: { args: [ptr, ptr, ptr, ptr, ptr, ptr], returns: i32 },
    posix_spawn_file_actions_init: { args: [ptr], returns: i32 },
    posix_spawn_file_actions_destroy: { args: [ptr], returns: i32 },
    posix_spawn_file_actions_adddup2: { args: [ptr, i32, i32], returns: i32 },
    posix_spawn_file_actions_addclosefrom_np: { args: [ptr, i32], returns: i32 },
    posix_spawnattr_init: { args: [ptr], returns: i32 },
    posix_spawnattr_setflags: { args: [ptr, FFIType.i16], returns: i32 },
    posix_spawnattr_setsigdefault: { args: [ptr, ptr], returns: i32 },
    posix_spawnattr_setsigmask: { args: [ptr, ptr], returns: i32 },
    sigfillset: { args: [ptr], returns: i32 },
    sigemptyset: { args: [ptr], returns: i32 },
  }).symbols;
}
let spawnSymbols: ReturnType<typeof openSpawn> | null | undefined;
const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
/** posix_spawnattr_t is 336 bytes and posix_spawn_file_actions_t 80 on 64-bit glibc; room to spare. */
const ATTR_BYTES = 512;
const ACTIONS_BYTES = 128;
let spawnAttr: Uint8Array | undefined;
/** The file actions of the last stdio triple: a worker's connections mostly get the same descriptor number. */
let lastActions: { key: string; actions: Uint8Array } | undefined;

/** Whether spawnProgram works here (glibc 2.34 or later). */
export function canSpawn(): boolean {
  if (spawnSymbols === undefined) {
    try {
      spawnSymbols = openSpawn();
    } catch {
      spawnSymbols = null;
    }
  }
  return spawnSymbols !== null;
}

/**
 * argv or envp for spawnProgram: C strings made once, and a NULL-ended
 * table of pointers to them, with room for `spare` strings of a call's own.
 */
export class StringTable {
  private readonly keep: Buffer[] = [];
  /** This call's own strings, held until the next. */
  private extra: Buffer | undefined;
  private readonly table: BigUint64Array;
  private readonly fixed: number;

  constructor(strings: readonly string[], private readonly spare = 0) {
    this.fixed = strings.length;
    this.table = new BigUint64Array(strings.length + spare + 1);
    strings.forEach((s, i) => {
      const bytes = Buffer.from(`${s}\0`);
      this.keep.push(bytes);
      this.table[i] = BigInt(pointerTo(bytes));
    });
  }

  /** The table with `extra` after the fixed strings (valid until the next call): one buffer for them all. */
  with(extra: readonly string[] = []): BigUint64Array {
    if (extra.length > this.spare) throw new RangeError("StringTable: more strings than its spare room");
    let bytes = 0;
    for (const s of extra) bytes += Buffer.byteLength(s) + 1;
    const buffer = Buffer.alloc(bytes); // zeroed: each string's NUL is already there
    const base = bytes > 0 ? pointerTo(buffer) : 0;
    let offset = 0;
    extra.forEach((s, i) => {
      this.table[this.fixed + i] = BigInt(base + offset);
      offset += buffer.write(s, offset) + 1;
    });
    this.table[this.fixed + extra.length] = 0n;
    this.extra = buffer;
    return this.table;
  }
}

/**
 * Starts `path` with `stdio` as its descriptors 0-2 and no other (closefrom
 * 3), every signal at its default and none blocked, as Bun.spawn does; the
 * pid. Throws SysError("posix_spawn") when it cannot start (ENOENT, EACCES:
 * glibc reports the exec's failure). Only after canSpawn().
 */
export function spawnProgram(path: Buffer, argv: BigUint64Array, envp: BigUint64Array, stdio: readonly [number, number, number]): number {
  const s = spawnSymbols!;
  if (!spawnAttr) {
    const attr = new Uint8Array(ATTR_BYTES);
    const set = new Uint8Array(128);
    s.posix_spawnattr_init(attr);
    s.sigfillset(set);
    s.posix_spawnattr_setsigdefault(attr, set);
    s.sigemptyset(set);
    s.posix_spawnattr_setsigmask(attr, set);
    s.posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    spawnAttr = attr;
  }
  const key = stdio.join(",");
  if (lastActions?.key !== key) {
    if (lastActions) s.posix_spawn_file_actions_destroy(lastActions.actions);
    const actions = new Uint8Array(ACTIONS_BYTES);
    s.posix_spawn_file_actions_init(actions);
    stdio.forEach((fd, target) => s.posix_spawn_file_actions_adddup2(actions, fd, target));
    s.posix_spawn_file_actions_addclosefrom_np(actions, 3);
    lastActions = { key, actions };
  }
  const pid = new Int32Array(1);
  const code = s.posix_spawn(pid, path, lastActions.actions, spawnAttr, argv, envp);
  if (code !== 0) throw new SysError("posix_spawn", code);
  return pid[0];
}

const P_PIDFD = 3;

/**
 * Reaps the ended child of `pidfd` (waitid P_PIDFD: no other child is
 * touched): its exit status, or the number of the signal that ended it.
 * Undefined when it has not ended yet.
 */
export function reapPidfd(pidfd: number): { code: number | null; signal: number | null } | undefined {
  const info = new Int32Array(32); // siginfo_t: si_pid at byte 16, si_code at 8, si_status at 24
  check("waitid", lib().waitid(P_PIDFD, pidfd, info, WEXITED | WNOHANG));
  if (info[4] === 0) return undefined;
  return info[2] === CLD_EXITED ? { code: info[6], signal: null } : { code: null, signal: info[6] };
}
