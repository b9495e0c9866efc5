// The listening socket: Bun.listen creates, binds and listens (SO_REUSEADDR,
// backlog 512: checked with strace; raised here to BACKLOG), after a stale
// UNIX socket file is cleared away; errors become socket(1)'s messages.
import type { SocketHandler, SocketListener } from "bun";
import { serviceName, type Address } from "./address.ts";
import { Fatal } from "../fatal.ts";
import { PASSED_FD } from "./activation.ts";
import { probeUnix } from "../system/connect.ts";
import { close, dupCloexec, setNonBlocking } from "../system/fd.ts";
import { strerror, SysError } from "../system/ffi.ts";
import { umask } from "../system/files.ts";
import { setBacklog, setDeferAccept } from "../system/socket.ts";

import { errorNumber, errorText } from "../fatal.ts";
import { fs } from "../system/builtins.ts";

declare module "bun" {
  /** Bun.listen adopts a listening descriptor given as `fd` (a passed or kept listener); its types leave that form out. */
  function listen<Data = undefined>(options: SocketOptions<Data> & { fd: number }): TCPSocketListener<Data>;
  // Bun's own last form again, so that Parameters<typeof Bun.listen> still reads it.
  function listen<Data = undefined>(options: UnixSocketOptions<Data>): UnixSocketListener<Data>;
}

const EXIT_SERVER_SOCKET = 1;
/**
 * A burst of connects larger than the backlog costs a SYN retransmit (a
 * second) each; the kernel caps this at net.core.somaxconn (4096 here).
 */
export const BACKLOG = 4096;

export interface Listening<T> {
  listener: SocketListener<T>;
  /** The address actually bound: port 0 becomes the kernel's choice. */
  address: Address;
}

/** Which descriptor a Bun object holds; Bun has it at run time, its types do not say. */
export function fdOf(handle: object): number {
  const fd = "fd" in handle ? handle.fd : undefined;
  if (typeof fd !== "number" || fd < 0) throw new Error("Bun did not expose the descriptor");
  return fd;
}

function serverError(errno: number, name: string): Fatal {
  return new Fatal(`${name}: ${strerror(errno)}`, EXIT_SERVER_SOCKET);
}

/** Removes a socket file nobody listens on; refuses to touch anything else. `name` starts its errors. */
export function clearStaleSocket(path: string, name = "server socket"): void {
  let stat;
  try {
    stat = fs().lstatSync(path);
  } catch {
    return; // nothing there
  }
  if (!stat.isSocket()) throw new Fatal(`${name}: ${path} exists and is not a socket; not removing it`, EXIT_SERVER_SOCKET);
  try {
    probeUnix(path);
  } catch (e) {
    if (e instanceof SysError && e.errno === 111 /* ECONNREFUSED: nobody home */) {
      fs().unlinkSync(path);
      return;
    }
    throw e instanceof SysError ? serverError(e.errno, name) : e;
  }
  throw serverError(98 /* EADDRINUSE: a live server has it */, name);
}

/** How to listen: the UNIX socket's mode, TCP_DEFER_ACCEPT, or the socket systemd passed. */
export interface ListenOptions {
  mode?: number;
  deferAcceptSecs?: number;
  passed?: boolean;
  /** TCP: SO_REUSEPORT (a USR2 successor's status page shares the old master's port until it exits). */
  reusePort?: boolean;
  /** What errors call it: "server socket" unless said. */
  name?: string;
}

export function listen<T>(address: Address, handlers: SocketHandler<T>, options: ListenOptions): Listening<T> {
  const { mode, deferAcceptSecs, passed, reusePort = false, name = "server socket" } = options;
  if (passed) return adopt(address, handlers);
  try {
    if (address.kind === "unix") {
      clearStaleSocket(address.path, name);
      // Created with the permissions asked for, so no client slips in before a chmod.
      const old = mode === undefined ? undefined : umask(0o777 & ~mode);
      try {
        const listener = Bun.listen<T>({ unix: address.path, socket: handlers, allowHalfOpen: true });
        if (mode !== undefined) fs().chmodSync(address.path, mode);
        setBacklog(fdOf(listener), BACKLOG);
        return { listener, address };
      } finally {
        if (old !== undefined) umask(old);
      }
    }
    // Bun's types leave reusePort out of a listener's options; Bun.listen reads it.
    const tcp = { hostname: address.ip, port: address.port, socket: handlers, allowHalfOpen: true, reusePort };
    const listener = Bun.listen<T>(tcp);
    setBacklog(fdOf(listener), BACKLOG);
    // Silent connects stay in the kernel: they never reach accept(), a worker or a program.
    if (deferAcceptSecs !== undefined) setDeferAccept(fdOf(listener), deferAcceptSecs);
    return { listener, address: { ...address, port: listener.port } };
  } catch (e) {
    if (e instanceof Fatal) throw e;
    const errno = errorNumber(e);
    if (errno !== undefined) throw serverError(Math.abs(errno), name);
    throw new Fatal(`${name}: ${errorText(e)}`, EXIT_SERVER_SOCKET);
  }
}

/** The socket systemd passed: Bun listens on a copy of it; ours is closed so no program inherits it. */
function adopt<T>(address: Address, handlers: SocketHandler<T>): Listening<T> {
  try {
    const listener = Bun.listen<T>({ fd: PASSED_FD, socket: handlers, allowHalfOpen: true });
    if (fdOf(listener) !== PASSED_FD) close(PASSED_FD);
    return { listener, address };
  } catch (e) {
    throw new Fatal(`server socket: descriptor ${PASSED_FD}: ${errorText(e)}`, EXIT_SERVER_SOCKET);
  }
}

/** For the pool: the passed socket, made ready for workers' epoll wait, as detachListener does. */
export function passedListener(): number {
  const fd = dupCloexec(PASSED_FD);
  close(PASSED_FD);
  setNonBlocking(fd);
  return fd;
}

export function listeningMessage(address: Address): string {
  if (address.kind === "unix") return `unix: bound to ${address.path}`;
  const name = serviceName(address.port);
  return `inet: listening on port ${address.port}${name ? ` (${name})` : ""}`;
}

/**
 * For the pool: the master keeps the listening descriptor but must never
 * accept on it (a live Bun listener would take connections from the workers).
 * So keep a copy, stop Bun's listener (that ends its polling; for a UNIX
 * socket it also unlinks the path, which a hard link preserves), and make
 * it non-blocking: workers wait for it in epoll, and one that loses the race
 * for a connection gets EAGAIN and waits again.
 */
export function detachListener<T>(listening: Listening<T>): number {
  const fd = pauseListener(listening);
  setNonBlocking(fd);
  return fd;
}

/**
 * The classic server stops accepting (out of descriptors) by keeping a copy
 * of the listening descriptor and stopping Bun's listener; the kernel's
 * backlog keeps the connects meanwhile. A UNIX path survives stop() through
 * a hard link.
 */
export function pauseListener<T>({ listener, address }: Listening<T>): number {
  const fd = dupCloexec(fdOf(listener));
  if (address.kind === "unix") {
    const keep = `${address.path}.${process.pid}.keep`;
    fs().linkSync(address.path, keep);
    listener.stop();
    fs().renameSync(keep, address.path);
  } else {
    listener.stop();
  }
  return fd;
}

/** Accepting again: Bun adopts the kept descriptor (and closes it at its stop()). */
export function resumeListener<T>(fd: number, handlers: SocketHandler<T>): SocketListener<T> {
  return Bun.listen<T>({ fd, socket: handlers, allowHalfOpen: true });
}
