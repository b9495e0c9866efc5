// A pool worker: the same executable, started by the master with the
// listening socket as fd 3 and a control socket from the master as fd 4
// (protocol.ts). It chooses how it serves once, from its options (the
// program gets the connection, --prestart's bridge, SCGI, FastCGI), then
// sleeps in one epoll_wait on the listener and the control socket (no
// timer), accepts one connection at a time (EPOLLEXCLUSIVE: the kernel
// wakes one waiting worker per connection), serves it, tells the master,
// and waits again.
import { programFor } from "../connection/program.ts";
import { accessRules, peerIp, refusedPeer } from "../connection/sources.ts";
import { refusedLine } from "../net/rules.ts";
import { connectionMessage, serveDescriptor } from "../connection/serve.ts";
import type { Options } from "../options.ts";
import { Fatal } from "../fatal.ts";
import { close, dup2, setCloexec } from "../system/fd.ts";
import { EAGAIN, ECONNABORTED, EINTR, EPROTO, SysError } from "../system/ffi.ts";
import { isReadable } from "../system/poll.ts";
import { dieWithParent, getppid } from "../system/process.ts";
import { MSG_DONTWAIT, tryAccept, tryRecv } from "../system/socket.ts";
import { reopenLog } from "../system/daemon.ts";
import { say, verbose, write } from "../system/log.ts";
import { exitNow, nextTick } from "../system/signals.ts";
import { startThreadsNow } from "../system/threads.ts";
import { admitted } from "./admission.ts";
import { Prestart } from "./prestart.ts";
import {
  CONTROL_FD,
  EXIT_LISTENER_FAILED,
  EXIT_MAX_REQUESTS,
  EXIT_RETIRED,
  EXIT_START_FAILED,
  LEAVE,
  REOPEN,
  LISTEN_FD,
  reportsEvents,
  reportsState,
  readWorkerConfig,
  transientErrno,
  type WorkerSetup,
  type WorkerMessage,
} from "./protocol.ts";
import { Waiter } from "./wait.ts";
import type { MasterWord } from "../gateway/fastcgi-job.ts";
import { plainOverdue } from "../request/request-deadline.ts";

import { errorText } from "../fatal.ts";

/** How a worker serves a connection it accepted; chosen once, at start. */
interface Mode {
  /** Accept connections non-blocking: only where the worker alone uses them (the splice bridge, FastCGI). */
  readonly nonBlocking: boolean;
  serve(fd: number): Promise<unknown>;
  /** The worker drains: no connection is kept for a further request. */
  drain?(): void;
  /** The worker retires (LEAVE): a kept connection serves on until its next request ends it, or the web server's close. */
  retire?(): void;
}

/** What a worker reports as it happens (--status, --slow): each gateway request's method and URI, each program that failed to start, each request --request-timeout ended. */
interface Reports {
  noteRequest?: (request: string) => void;
  failed?: () => void;
  overdue?: () => void;
}

async function chooseMode(worker: WorkerSetup, waiter: Waiter, reports: Reports, hear: () => MasterWord): Promise<Mode> {
  const { options, address } = worker;
  if (options.gateway) return gatewayMode(worker, reports, hear);
  const program = programFor(options.program!); // a pool without a gateway always has -p (cli/parse.ts)
  const served = reports.failed ? { ...options, failed: reports.failed } : options;
  if (options.pool?.prestart) return new Prestart(program, address, served, waiter);
  return { nonBlocking: false, serve: (fd) => serveDescriptor(fd, address, served, program, true, (o) => plainOverdue({ ...o, counted: reports.overdue })) };
}

/**
 * --scgi, --fastcgi. The gateways are imported here, when asked for, and
 * only here: their code and what it loads would otherwise sit in every
 * `-p` worker's heap.
 */
async function gatewayMode({ options, address }: WorkerSetup, reports: Reports, hear: () => MasterWord): Promise<Mode> {
  const source = (await import("../request/site.ts")).cgiSource(options, reports);
  if (options.gateway === "scgi") {
    const { serveScgiDescriptor } = await import("../gateway/scgi.ts");
    return { nonBlocking: false, serve: (fd) => serveScgiDescriptor(fd, address, options, source) };
  }
  const { serveFastCgiDescriptor, leaveWorkerConnection } = await import("../gateway/fastcgi-blocking.ts");
  // Between requests on a kept connection the listener (a waiting connection takes this worker) and
  // the master's word (heard by the connection, acted on by the worker) end it, or a web server
  // keeping it for ever would hold this worker, and a HUP would never replace it.
  const pool = { listener: LISTEN_FD, control: CONTROL_FD, hear };
  const maxConns = options.pool!.max; // a worker's options always have a pool (protocol.ts readWorkerConfig)
  const leave = (how: "stop" | "retire") => () => leaveWorkerConnection(how);
  return { nonBlocking: true, serve: (fd) => serveFastCgiDescriptor(fd, options, source, maxConns, pool), drain: leave("stop"), retire: leave("retire") };
}

/** accept(2) errors that are one connection's (gone before it was taken), as tcpserver treats them. */
const CONNECTION_FAILURES = new Set([ECONNABORTED, EINTR, EPROTO]);

function tell(options: Options, message: WorkerMessage, always = false): void {
  if (!always && !reportsState(options)) return;
  try {
    process.send?.(message);
  } catch {
    // master gone: the control socket's EOF (or the parent-death signal) ends us
  }
}

/** What the master said on the control socket: RETIRE, LEAVE, REOPEN, or end of file (it is gone: drain). */
function hearMaster(): MasterWord {
  const byte = new Uint8Array(1);
  const n = tryRecv(CONTROL_FD, byte, MSG_DONTWAIT);
  if (n < 0) return "nothing"; // EAGAIN: woken for something else
  return n === 1 && byte[0] === LEAVE ? "leave" : n === 1 && byte[0] === REOPEN ? "reopen" : "drain";
}

/**
 * A worker from its configuration (the SOCKET_WORKER text). One that cannot
 * set itself up says why in one line (to the master, which reads its
 * stderr until it waits) and exits EXIT_START_FAILED, or 1 for a shortage
 * (EAGAIN, EMFILE...) that the next try may not meet. A failure once it
 * waits is no failure to start.
 */
export async function startWorker(configText: string): Promise<never> {
  let serving: Serving;
  try {
    serving = await setUp(readWorkerConfig(configText));
  } catch (e) {
    if (e instanceof Fatal) write(e.text);
    else say(`worker: ${errorText(e)}`);
    return exitNow(e instanceof SysError && transientErrno(e.errno) ? 1 : EXIT_START_FAILED);
  }
  // Ready, said even in a quiet fixed pool: the master announces readiness
  // (READY=1, -b's caller released) once the first workers wait in accept.
  tell(serving.options, "idle", true);
  return serving.run();
}

/** Ready: socket's own stderr back on fd 2, in place of the master's pipe (protocol.ts STDERR_FD). */
function takeStderr(worker: WorkerSetup): void {
  if (worker.stderrFd === undefined) return;
  try {
    dup2(worker.stderrFd, 2);
    close(worker.stderrFd);
  } catch {
    // the pipe stays: the master passes on what comes through it
  }
}

/** Everything a worker does before it waits: what could fail to start. */
async function setUp(worker: WorkerSetup): Promise<Serving> {
  const { options, address } = worker;
  if (worker.threadsAtStart) startThreadsNow();
  // Die with the master, however it dies (SIGKILL included): nothing may be
  // left holding the port. Then check it did not die before we asked.
  dieWithParent();
  if (getppid() !== worker.masterPid) process.exit(EXIT_RETIRED);
  // Programs must not inherit the listener (they would hold the port) or the control socket.
  setCloexec(LISTEN_FD);
  setCloexec(CONTROL_FD);
  if (worker.stderrFd !== undefined) setCloexec(worker.stderrFd);

  // What --status counts and --slow names, told to the master as it happens.
  const reports: Reports = {
    noteRequest: options.slowMs !== undefined || reportsEvents(options) ? (request) => tell(options, { request }) : undefined,
    failed: reportsEvents(options) ? () => tell(options, "failed") : undefined,
    overdue: reportsEvents(options) ? () => tell(options, "overdue") : undefined,
  };
  const rules = accessRules(options, address);
  const waiter = new Waiter(LISTEN_FD, CONTROL_FD);
  // A FastCGI connection hears the master's word while it waits; the worker acts on it (Serving.hear).
  let heard: Serving | undefined;
  const mode = await chooseMode(worker, waiter, reports, () => heard?.hear() ?? "nothing");
  const serving = (heard = new Serving(worker, mode, waiter, rules));

  // Ctrl-C reaches the whole process group, and a service manager may TERM
  // every process of the service: finish the connection in hand and drain
  // the queue as a retire byte asks (the master does the shutting down). A
  // signal ends the epoll wait, so the flag is seen at once.
  for (const name of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(name, serving.drain);
  // A USR1 sent to the worker itself does what the master's REOPEN does.
  if (worker.logFile !== undefined) process.on("SIGUSR1", serving.reopen);
  takeStderr(worker);
  return serving;
}

/** What to do next in the worker's loop: accept a connection, go round again, or stop and exit. */
type Next = "accept" | "again" | "stop";

/** A worker that waits: one connection at a time, until it is told to go. */
class Serving {
  readonly options: Options;
  private readonly prestart: Prestart | undefined;
  /** Told to drain (RETIRE, the master gone, a signal): serve what waits in the queue, then exit. */
  private draining = false;
  /** LEAVE (a reload, an upgrade, TTOU): exit once the connection in hand is done; the queue is the others'. */
  private leaving = false;
  private served = 0;

  constructor(
    private readonly worker: WorkerSetup,
    private readonly mode: Mode,
    private readonly waiter: Waiter,
    private readonly rules: ReturnType<typeof accessRules>,
  ) {
    this.options = worker.options;
    this.prestart = mode instanceof Prestart ? mode : undefined;
  }

  readonly drain = (): void => {
    this.draining = true;
    this.mode.drain?.();
  };

  /** The master's REOPEN (its USR1 under -b --log): the log file was moved away; write to a new one at the path. */
  readonly reopen = (): void => {
    const { logFile } = this.worker;
    if (logFile === undefined) return;
    try {
      reopenLog(logFile);
    } catch (e) {
      say(`worker ${process.pid}: ${errorText(e)}`);
    }
  };

  /** Reads the master's word and acts on it; what it was. */
  hear(): MasterWord {
    const word = hearMaster();
    if (word === "leave") {
      this.leaving = true;
      this.mode.retire?.(); // a connection served after this one (or the one in hand) is a retiring worker's
    } else if (word === "reopen") this.reopen();
    else if (word === "drain") this.drain();
    return word;
  }

  async run(): Promise<never> {
    for (;;) {
      const next = await this.waitForWork();
      if (next === "stop") break;
      if (next === "again") continue;
      const fd = this.take();
      if (fd === "stop") break;
      if (fd === "again") continue;
      if ((await this.serveOne(fd)) === "stop") break;
    }
    this.prestart?.discard();
    return process.exit(EXIT_RETIRED);
  }

  /** Blocks until a connection, the master, the program or a signal; what that means for the loop. */
  private async waitForWork(): Promise<Next> {
    const { prestart } = this;
    // Told to retire during the connection: start no program only to kill it.
    if (prestart && isReadable(CONTROL_FD)) this.hear();
    if (this.leaving && prestart) return "stop";
    if (this.draining) return "accept";
    if (prestart && !(await prestart.ready())) return "again";
    const ready = await this.waiter.wait();
    if (ready.has(CONTROL_FD)) {
      this.hear(); // a retire or leave byte, or end of file: the master is gone
      // A connection that woke this worker is served first: EPOLLEXCLUSIVE woke no other worker for it.
      if (this.leaving && !ready.has(LISTEN_FD)) return "stop";
      return !this.draining && !this.leaving ? "again" : "accept";
    }
    if (prestart && ready.has(prestart.pidfd)) {
      await prestart.ended();
      return "again";
    }
    return !this.draining && !ready.has(LISTEN_FD) ? "again" : "accept";
  }

  /** One connection from the queue; none there ends a drain (or another worker was quicker). */
  private take(): number | "again" | "stop" {
    const fd = tryAccept(LISTEN_FD, this.mode.nonBlocking);
    if (fd >= 0) return fd;
    const errno = -fd;
    if (errno === EAGAIN) return this.draining || this.leaving ? "stop" : "again";
    if (errno === EINTR || CONNECTION_FAILURES.has(errno)) return "again"; // that connection's trouble, not the listener's
    say(`worker ${process.pid}: ${new SysError("accept", errno).message}`);
    this.prestart?.discard();
    return process.exit(EXIT_LISTENER_FAILED);
  }

  private async serveOne(fd: number): Promise<"again" | "stop"> {
    const { options } = this;
    const { address } = this.worker;
    // --allow/--deny: before admission, before any program or gateway reads a byte.
    const refused = this.rules && refusedPeer(this.rules, fd);
    if (refused) {
      close(fd);
      verbose(options, refusedLine(refused));
      if (reportsEvents(options)) tell(options, "refused");
      return "again";
    }
    // Only --max-per-source asks the master (not even an await otherwise).
    if (options.maxPerSource !== undefined && !(await admitted(options, address, fd))) return "again";
    tell(options, "busy");
    if (options.verbose) verbose(options, connectionMessage(address, () => peerIp(fd)));
    try {
      await this.mode.serve(fd);
    } catch (e) {
      say(`worker ${process.pid}: ${errorText(e)}`);
    }
    this.served++;
    const maxRequests = options.pool?.maxRequests ?? 0;
    if (maxRequests > 0 && this.served >= maxRequests) {
      this.prestart?.discard();
      process.exit(EXIT_MAX_REQUESTS);
    }
    if (this.leaving) return "stop";
    tell(options, "idle");
    await nextTick(); // let Bun reap children and deliver signals before the next blocking wait
    return "again";
  }
}
