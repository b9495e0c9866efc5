// Sockets socket makes itself: a client's connection (bound to -B's local
// address, which Bun.connect cannot do), a probe of a UNIX socket file,
// the pool's control pairs, one sd_notify datagram. How each call reports failure: ffi.ts.
import { check, EAGAIN, EINTR, EINVAL, ENAMETOOLONG, errno, lib, SysError } from "./ffi.ts";
import { setBlocking } from "./fd.ts";
import { POLLOUT, tryPoll } from "./poll.ts";
import { nextTick } from "./signals.ts";
import { AF_UNIX, inetSockaddr, unixSockaddr } from "./sockaddr.ts";
import { SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_STREAM, SOL_SOCKET } from "./socket.ts";

export { AF_INET, AF_INET6 } from "./sockaddr.ts";

const SOCK_DGRAM = 2;

/** A connected pair of UNIX stream sockets, close-on-exec. */
export function socketPair(): [number, number] {
  const fds = new Int32Array(2);
  check("socketpair", lib().socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
  return [fds[0], fds[1]];
}

const EINPROGRESS = 115;
const SO_ERROR = 4;
/** The longest the JavaScript thread is held in one poll while a connect is under way. */
const CONNECT_SLICE_MS = 50;

/** The connect's errno once `fd` is writable (0: connected); a signal's handler runs between slices. */
async function connectResult(fd: number): Promise<number> {
  const pollfd = new Int32Array([fd, POLLOUT]);
  for (;;) {
    const ready = tryPoll(pollfd, 1, CONNECT_SLICE_MS);
    if (ready > 0) break;
    if (ready < 0 && ready !== -EINTR) return -ready;
    await nextTick();
  }
  const value = new Int32Array(1);
  check("getsockopt", lib().getsockopt(fd, SOL_SOCKET, SO_ERROR, value, new Uint32Array([4])));
  return value[0]!;
}

/**
 * A connected stream socket of `family` to `to` (bound first to `from`),
 * blocking once connected (a program handed it expects that). Not one
 * blocking connect(2): the JavaScript thread held in it holds Bun's signal
 * handlers too, so INT or TERM did nothing until the kernel gave up on a
 * host that drops SYNs (about two minutes). A UNIX listener whose backlog
 * is full says EAGAIN at once: the connect is tried again, as a blocking
 * one would wait. Closed and the SysError thrown when it fails.
 */
async function connectSocket(family: number, to: Uint8Array, from?: Uint8Array): Promise<number> {
  const fd = check("socket", lib().socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  try {
    if (from) check("bind", lib().bind(fd, from, from.length));
    const attempt = () => (lib().connect(fd, to, to.length) === 0 ? 0 : errno());
    let code = attempt();
    // Only UNIX's EAGAIN is a full backlog (TCP's is out of local ports, which waiting does not mend).
    for (; code === EAGAIN && family === AF_UNIX; code = attempt()) await Bun.sleep(CONNECT_SLICE_MS);
    if (code === EINPROGRESS) code = await connectResult(fd);
    if (code !== 0) throw new SysError("connect", code);
    setBlocking(fd);
    return fd;
  } catch (e) {
    lib().close(fd);
    throw e;
  }
}

/** A connected TCP socket, bound first to `localIp` when given. Bun.connect has no local-address option. */
export function connectInet(family: number, ip: string, port: number, localIp?: string): Promise<number> {
  const local = localIp === undefined ? undefined : inetSockaddr(family, localIp, 0);
  const remote = inetSockaddr(family, ip, port);
  if (localIp !== undefined && !local) throw new SysError("bind", EINVAL);
  if (!remote) throw new SysError("connect", EINVAL);
  return connectSocket(family, remote, local);
}

/** A client's connection to the UNIX socket at `path`. */
export function connectUnix(path: string): Promise<number> {
  const sa = unixSockaddr(path);
  if (!sa) throw new SysError("connect", ENAMETOOLONG);
  return connectSocket(AF_UNIX, sa);
}

/** Whether a server listens at `path` now: returns if one does (connected, closed at once), else the SysError (ECONNREFUSED: nobody does). */
export function probeUnix(path: string): void {
  const sa = unixSockaddr(path);
  if (!sa) throw new SysError("connect", ENAMETOOLONG);
  const fd = check("socket", lib().socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  try {
    check("connect", lib().connect(fd, sa, sa.length));
  } finally {
    lib().close(fd);
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
