// A pool worker: the same executable, started by the master with the
// listening socket as fd 3 and a control socket from the master as fd 4.
// It sleeps in one epoll_wait on both (no timer), accepts one connection
// at a time (EPOLLEXCLUSIVE: the kernel wakes one waiting worker per
// connection), serves it, tells the master, and waits again.
import type { Address } from "../net/address.ts";
import { connectionMessage, log, serveDescriptor, type ServeOptions } from "../connection/serve.ts";
import { accept, dieWithParent, EAGAIN, ECONNABORTED, EINTR, EPROTO, getppid, isReadable, remoteEndpoint, setCloexec, SysError } from "../system/libc.ts";
import { programFor } from "../connection/program.ts";
import { nextTick, signalNumber } from "../system/signals.ts";
import { admitted, type AdmitRequest } from "./admission.ts";
import { Prestart } from "./prestart.ts";
import { Waiter } from "./wait.ts";
import { say } from "../system/log.ts";

/** Everything a worker is told by its master (in the SOCKET_WORKER environment variable). */
export interface WorkerConfig {
  command: string;
  address: Address;
  serve: ServeOptions;
  maxRequests: number;
  /** --prestart: the next program waits for its connection. */
  prestart: boolean;
  masterPid: number;
  /** Say busy/idle: only a dynamic pool, -v or --max-per-source needs it, and it costs the master a wakeup per message. */
  report: boolean;
  /** --max-per-source: ask the master before serving (admission.ts). */
  maxPerSource?: number;
}

/** Worker to master, over Bun's IPC channel (sent at once, even when the worker then blocks). */
export type WorkerMessage = "busy" | "idle" | AdmitRequest;
/**
 * Master to worker, one byte on the control socket: finish the connection
 * in hand (if any), serve what already waits in the listener's queue, and exit.
 */
export const RETIRE = 0x72;

export const WORKER_ENV = "SOCKET_WORKER";
export const WORKER_FLAG = "--pool-worker";
export const LISTEN_FD = 3;
export const CONTROL_FD = 4;
/** Exit status of a worker that served its --max-requests. */
export const EXIT_SERVED = 0;
/** Exit status of a worker that was retired. */
export const EXIT_RETIRED = 3;
/** Exit status of a worker whose listener failed (accept: neither a connection nor EAGAIN): the master backs off. */
export const EXIT_LISTENER_FAILED = 4;

/** accept(2) errors that are one connection's (gone before it was taken), as tcpserver treats them. */
const CONNECTION_FAILURES = new Set([ECONNABORTED, EINTR, EPROTO]);

/** The peer's address for -v (socket 1.1 printed the address when no name resolved). */
function peerIp(fd: number): string {
  try {
    const peer = remoteEndpoint(fd);
    return peer.family === "inet" ? peer.ip : peer.path;
  } catch {
    return "a peer already gone";
  }
}

function tell(config: WorkerConfig, message: WorkerMessage, always = false): void {
  if (!config.report && !always) return;
  try {
    process.send?.(message);
  } catch {
    // master gone: the control socket's EOF (or the parent-death signal) ends us
  }
}

export async function runWorker(config: WorkerConfig): Promise<never> {
  // Die with the master, however it dies (SIGKILL included): nothing may be
  // left holding the port. Then check it did not die before we asked.
  dieWithParent(signalNumber("SIGKILL"));
  if (getppid() !== config.masterPid) process.exit(EXIT_RETIRED);
  // Programs must not inherit the listener (they would hold the port) or the control socket.
  setCloexec(LISTEN_FD);
  setCloexec(CONTROL_FD);

  // Ctrl-C reaches the whole process group, and a service manager may TERM
  // every process of the service: finish the connection in hand and drain
  // the queue as a retire byte asks (the master does the shutting down). A
  // signal ends the epoll wait, so the flag is seen at once.
  let draining = false;
  for (const name of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(name, () => (draining = true));

  const waiter = new Waiter(LISTEN_FD, CONTROL_FD);
  const program = programFor(config.command);
  const prestart = config.prestart ? new Prestart(program, config.address, config.serve, waiter) : undefined;
  // Ready, said even in a quiet fixed pool: the master announces readiness
  // (READY=1, -b's caller released) once the first workers wait in accept.
  tell(config, "idle", true);
  let served = 0;
  for (;;) {
    // Told to retire during the connection: start no program only to kill it.
    if (prestart && isReadable(CONTROL_FD)) draining = true;
    if (!draining) {
      if (prestart && !(await prestart.ready())) continue;
      const ready = await waiter.wait(); // blocks until a connection, the master, the program or a signal
      if (ready.has(CONTROL_FD)) {
        draining = true; // a retire byte, or end of file: the master is gone
      } else if (prestart && ready.has(prestart.pidfd)) {
        await prestart.ended();
        continue;
      } else if (!draining && !ready.has(LISTEN_FD)) {
        continue;
      }
    }
    let fd: number;
    try {
      // Non-blocking only where the worker alone uses the connection (the bridge).
      fd = accept(LISTEN_FD, prestart !== undefined);
    } catch (e) {
      const errno = e instanceof SysError ? e.errno : 0;
      // Draining ends when the queue is empty; otherwise another worker was quicker.
      if (errno === EAGAIN) {
        if (draining) break;
        continue;
      }
      if (CONNECTION_FAILURES.has(errno)) continue; // that connection's trouble, not the listener's
      say(`worker ${process.pid}: unable to accept: ${(e as Error).message}`);
      prestart?.discard();
      process.exit(EXIT_LISTENER_FAILED);
    }
    if (!(await admitted(config, fd))) continue;
    tell(config, "busy");
    if (config.serve.verbose) log(config.serve, connectionMessage(config.address, () => peerIp(fd)));
    try {
      await (prestart ? prestart.serve(fd) : serveDescriptor(fd, config.address, config.serve, program, true));
    } catch (e) {
      say(`worker ${process.pid}: ${(e as Error).message}`);
    }
    served++;
    if (config.maxRequests > 0 && served >= config.maxRequests) {
      prestart?.discard();
      process.exit(EXIT_SERVED);
    }
    tell(config, "idle");
    await nextTick(); // let Bun reap children and deliver signals before the next blocking wait
  }
  prestart?.discard();
  process.exit(EXIT_RETIRED);
}
