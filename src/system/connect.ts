// Sockets socket makes itself: a client's connection (bound to -B's local
// address, which Bun.connect cannot do), the pool's control pairs, one
// sd_notify datagram. How each call reports failure: ffi.ts.
import { check, EINVAL, ENAMETOOLONG, lib, SysError } from "./ffi.ts";
import { AF_UNIX, inetSockaddr, unixSockaddr } from "./sockaddr.ts";
import { SOCK_CLOEXEC, SOCK_STREAM } from "./socket.ts";

export { AF_INET, AF_INET6 } from "./sockaddr.ts";

const SOCK_DGRAM = 2;

/** A connected pair of UNIX stream sockets, close-on-exec. */
export function socketPair(): [number, number] {
  const fds = new Int32Array(2);
  check("socketpair", lib().socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
  return [fds[0], fds[1]];
}

/** `fd` connected to `to` (bound first to `from`), or closed and the SysError thrown. */
function connectOrClose(fd: number, to: Uint8Array, from?: Uint8Array): number {
  try {
    if (from) check("bind", lib().bind(fd, from, from.length));
    check("connect", lib().connect(fd, to, to.length));
    return fd;
  } catch (e) {
    lib().close(fd);
    throw e;
  }
}

/**
 * A connected TCP socket (blocking connect, as socket(1) does it), bound
 * first to `localIp` when given. Bun.connect has no local-address option.
 */
export function connectInet(family: number, ip: string, port: number, localIp?: string): number {
  const local = localIp === undefined ? undefined : inetSockaddr(family, localIp, 0);
  const remote = inetSockaddr(family, ip, port);
  const fd = check("socket", lib().socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (localIp !== undefined && !local) {
    lib().close(fd);
    throw new SysError("bind", EINVAL);
  }
  if (!remote) {
    lib().close(fd);
    throw new SysError("connect", EINVAL);
  }
  return connectOrClose(fd, remote, local);
}

export function connectUnix(path: string): number {
  const sa = unixSockaddr(path);
  if (!sa) throw new SysError("connect", ENAMETOOLONG);
  return connectOrClose(check("socket", lib().socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)), sa);
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
