// A pool worker: the same executable, started by the master with the
// listening socket as fd 3 and a control socket from the master as fd 4
// (protocol.ts). It chooses how it serves once, from its options (the
// program gets the connection, --prestart's bridge, SCGI, FastCGI), then
// sleeps in one epoll_wait on the listener and the control socket (no
// timer), accepts one connection at a time (EPOLLEXCLUSIVE: the kernel
// wakes one waiting worker per connection), serves it, tells the master,
// and waits again.
import { programFor } from "../connection/program.ts";
import { connectionMessage, serveDescriptor } from "../connection/serve.ts";
import { adoptDescriptor } from "../connection/events.ts";
import { CLASSIC_MAX_CONNS, FastCgiHandler, stopKeptConnections } from "../gateway/fastcgi.ts";
import { serveScgiDescriptor } from "../gateway/scgi.ts";
import { cgiSource } from "../gateway/cgi.ts";
import type { Address } from "../net/address.ts";
import type { Options } from "../options.ts";
import { accept, dieWithParent, EAGAIN, ECONNABORTED, EINTR, EPROTO, getppid, isReadable, remoteEndpoint, setCloexec, SysError } from "../system/libc.ts";
import { say, verbose } from "../system/log.ts";
import { nextTick, signalNumber } from "../system/signals.ts";
import { admitted } from "./admission.ts";
import { Prestart } from "./prestart.ts";
import {
  CONTROL_FD,
  EXIT_LISTENER_FAILED,
  EXIT_MAX_REQUESTS,
  EXIT_RETIRED,
  LISTEN_FD,
  reportsState,
  type Worker,
  type WorkerMessage,
} from "./protocol.ts";
import { Waiter } from "./wait.ts";

/** How this worker serves a connection it accepted; chosen once, at start. */
interface Mode {
  /** Accept connections non-blocking: only where the worker alone uses them (the splice bridge). */
  readonly nonBlocking: boolean;
  serve(fd: number): Promise<unknown>;
  /** The worker drains: no connection is kept for a further request. */
  drain?(): void;
}

function chooseMode({ options, address }: Worker, waiter: Waiter): Mode {
  if (options.gateway === "scgi") {
    const source = cgiSource(options);
    return { nonBlocking: false, serve: (fd) => serveScgiDescriptor(fd, address, options, source) };
  }
  if (options.gateway === "fastcgi") {
    const source = cgiSource(options);
    return {
      nonBlocking: false,
      serve: async (fd) => {
        // The listener: a kept connection gives way when another one waits there.
        const handler = new FastCgiHandler(options, source, options.pool?.max ?? CLASSIC_MAX_CONNS, LISTEN_FD);
        await adoptDescriptor(fd, handler);
        await handler.done;
      },
      drain: stopKeptConnections,
    };
  }
  const program = programFor(options.program!); // a pool without a gateway always has -p (cli/parse.ts)
  if (options.pool?.prestart) return new Prestart(program, address, options, waiter);
  return { nonBlocking: false, serve: (fd) => serveDescriptor(fd, address, options, program, true) };
}

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

function tell(options: Options, message: WorkerMessage, always = false): void {
  if (!always && !reportsState(options)) return;
  try {
    process.send?.(message);
  } catch {
    // master gone: the control socket's EOF (or the parent-death signal) ends us
  }
}

export async function runWorker(worker: Worker): Promise<never> {
  const { options, address } = worker;
  // Die with the master, however it dies (SIGKILL included): nothing may be
  // left holding the port. Then check it did not die before we asked.
  dieWithParent(signalNumber("SIGKILL"));
  if (getppid() !== worker.masterPid) process.exit(EXIT_RETIRED);
  // Programs must not inherit the listener (they would hold the port) or the control socket.
  setCloexec(LISTEN_FD);
  setCloexec(CONTROL_FD);

  const waiter = new Waiter(LISTEN_FD, CONTROL_FD);
  const mode = chooseMode(worker, waiter);
  const prestart = mode instanceof Prestart ? mode : undefined;

  // Ctrl-C reaches the whole process group, and a service manager may TERM
  // every process of the service: finish the connection in hand and drain
  // the queue as a retire byte asks (the master does the shutting down). A
  // signal ends the epoll wait, so the flag is seen at once.
  let draining = false;
  const drain = () => {
    draining = true;
    mode.drain?.();
  };
  for (const name of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(name, drain);

  // Ready, said even in a quiet fixed pool: the master announces readiness
  // (READY=1, -b's caller released) once the first workers wait in accept.
  tell(options, "idle", true);
  const maxRequests = options.pool?.maxRequests ?? 0;
  let served = 0;
  for (;;) {
    // Told to retire during the connection: start no program only to kill it.
    if (prestart && isReadable(CONTROL_FD)) drain();
    if (!draining) {
      if (prestart && !(await prestart.ready())) continue;
      const ready = await waiter.wait(); // blocks until a connection, the master, the program or a signal
      if (ready.has(CONTROL_FD)) {
        drain(); // a retire byte, or end of file: the master is gone
      } else if (prestart && ready.has(prestart.pidfd)) {
        await prestart.ended();
        continue;
      } else if (!draining && !ready.has(LISTEN_FD)) {
        continue;
      }
    }
    let fd: number;
    try {
      fd = accept(LISTEN_FD, mode.nonBlocking);
    } catch (e) {
      const errno = e instanceof SysError ? e.errno : 0;
      // Draining ends when the queue is empty; otherwise another worker was quicker.
      if (errno === EAGAIN) {
        if (draining) break;
        continue;
      }
      if (CONNECTION_FAILURES.has(errno)) continue; // that connection's trouble, not the listener's
      say(`worker ${process.pid}: ${(e as Error).message}`);
      prestart?.discard();
      process.exit(EXIT_LISTENER_FAILED);
    }
    if (!(await admitted(options, address, fd))) continue;
    tell(options, "busy");
    if (options.verbose) verbose(options, connectionMessage(address, () => peerIp(fd)));
    try {
      await mode.serve(fd);
    } catch (e) {
      say(`worker ${process.pid}: ${(e as Error).message}`);
    }
    served++;
    if (maxRequests > 0 && served >= maxRequests) {
      prestart?.discard();
      process.exit(EXIT_MAX_REQUESTS);
    }
    tell(options, "idle");
    await nextTick(); // let Bun reap children and deliver signals before the next blocking wait
  }
  prestart?.discard();
  process.exit(EXIT_RETIRED);
}
