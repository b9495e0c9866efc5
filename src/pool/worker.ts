// A pool worker: the same executable, started by the master with the
// listening socket as fd 3. It accepts one connection at a time with a
// blocking accept() (the kernel wakes exactly one waiting worker per
// connection), serves it, tells the master, and accepts again.
import type { Address } from "../net/address.ts";
import { connectionMessage, log, serveDescriptor, type ServeOptions } from "../connection/serve.ts";
import { accept, dieWithParent, EAGAIN, EINTR, getppid, remoteEndpoint, setReceiveTimeout, setCloexec, SysError } from "../system/libc.ts";
import { programFor } from "../connection/program.ts";
import { signalNumber } from "../system/signals.ts";

/** Everything a worker is told by its master (in the SOCKET_WORKER environment variable). */
export interface WorkerConfig {
  command: string;
  address: Address;
  serve: ServeOptions;
  maxRequests: number;
  masterPid: number;
  /** Say busy/idle: only a dynamic pool or -v needs it, and it costs the master a wakeup per message. */
  report: boolean;
}

/** Worker to master, over Bun's IPC channel. */
export type WorkerMessage = "busy" | "idle";
/** Master to worker: finish the connection in hand (if any) and exit. */
export type MasterMessage = "retire";

export const WORKER_ENV = "SOCKET_WORKER";
export const WORKER_FLAG = "--pool-worker";
const LISTEN_FD = 3;
/** Exit status of a worker that served its --max-requests. */
export const EXIT_SERVED = 0;
/** Exit status of a worker that was retired or saw the listener shut down. */
export const EXIT_RETIRED = 3;

/** The peer's address for -v (socket 1.1 printed the address when no name resolved). */
function peerIp(fd: number): string {
  try {
    const peer = remoteEndpoint(fd);
    return peer.family === "inet" ? peer.ip : peer.path;
  } catch {
    return "a peer already gone";
  }
}

const nextTick = () => new Promise<void>((resolve) => setImmediate(resolve));

function tell(config: WorkerConfig, message: WorkerMessage, always = false): void {
  if (!config.report && !always) return;
  try {
    process.send?.(message);
  } catch {
    // master gone: the parent-death signal ends us
  }
}

export async function runWorker(config: WorkerConfig): Promise<never> {
  // Die with the master, however it dies (SIGKILL included): nothing may be
  // left holding the port. Then check it did not die before we asked.
  dieWithParent(signalNumber("SIGKILL"));
  if (getppid() !== config.masterPid) process.exit(EXIT_RETIRED);
  // Programs must not inherit the listener, or they would hold the port.
  setCloexec(LISTEN_FD);

  let retire = false;
  process.on("message", (message: MasterMessage) => {
    if (message === "retire") retire = true;
  });
  // Ctrl-C reaches the whole process group: finish the connection in hand
  // (the master does the shutting down), do not drop it.
  for (const name of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(name, () => (retire = true));

  const program = programFor(config.command);
  // Ready, said even in a quiet fixed pool: the master announces readiness
  // (READY=1, -b's caller released) once the first workers wait in accept.
  tell(config, "idle", true);
  let served = 0;
  while (!retire) {
    let fd: number;
    try {
      fd = accept(LISTEN_FD);
    } catch (e) {
      if (e instanceof SysError && (e.errno === EAGAIN || e.errno === EINTR)) {
        await nextTick(); // let messages and signal handlers run
        continue;
      }
      break; // EINVAL: the master shut the listener down
    }
    // Accepted sockets inherit the listener's SO_RCVTIMEO: a program's reads
    // would time out with it, so the connection gets none.
    setReceiveTimeout(fd, 0);
    tell(config, "busy");
    if (config.serve.verbose) log(config.serve, connectionMessage(config.address, () => peerIp(fd)));
    try {
      await serveDescriptor(fd, config.address, config.serve, program);
    } catch (e) {
      process.stderr.write(`socket: worker ${process.pid}: ${(e as Error).message}\n`);
    }
    served++;
    if (config.maxRequests > 0 && served >= config.maxRequests) process.exit(EXIT_SERVED);
    tell(config, "idle");
    await nextTick();
  }
  process.exit(EXIT_RETIRED);
}
