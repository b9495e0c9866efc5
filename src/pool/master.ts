// The pool master (-W): binds once, keeps the listening descriptor without
// ever accepting on it, and keeps the pool of workers at the size its
// policy asks for. Workers say "busy" when they accept and "idle" when done
// (Bun's IPC); the master reaches a waiting worker through a control socket
// the worker watches in its epoll wait (its fd 4): one byte, RETIRE (drain
// the queue, then exit) or LEAVE (exit after the connection in hand); end
// of file means the master is gone.
// Signals (main.ts): HUP replaces every worker (reload), USR2 starts the
// executable again as a successor master on the same listener (upgrade),
// USR1 reopens -b's --log, TTIN/TTOU add or remove a worker.
import { unlinkSync } from "node:fs";
import type { Subprocess } from "bun";
import type { Address } from "../net/address.ts";
import { Fatal } from "../fatal.ts";
import type { Options, PoolPolicy } from "../options.ts";
import { MAX_WORKERS } from "../cli/parse.ts";
import { SUCCESSOR_ENV } from "../net/activation.ts";
import { handOverPidFile, logFileName, PID_FD_ENV, pidFileDescriptor, reopenLog, reportFatal, SUCCESSOR_PID_FD } from "../system/daemon.ts";
import { socketPair } from "../system/connect.ts";
import { close } from "../system/fd.ts";
import { strerror } from "../system/ffi.ts";
import { sendByte } from "../system/socket.ts";
import { say, verbose, write } from "../system/log.ts";
import { accessRules } from "../connection/sources.ts";
import { detachListener, listen, listeningMessage, passedListener } from "../net/listener.ts";
import { mainPid, notifyEnv, serving, stopping } from "../system/notify.ts";
import { endDescendants, KILL_AFTER_MS, spawn } from "../system/reaper.ts";
import { selfCommand, startDir } from "../system/self.ts";
import { atExit, exitNow } from "../system/signals.ts";
import { NO_LAZY_THREADS } from "../system/threads.ts";
import { Admissions } from "./admission.ts";
import { Backoff } from "./backoff.ts";
import { PERMANENT_TRIES, spawnFailure, stderrOpen, StartOutput, type StartFailure } from "./start-failures.ts";
import { PoolWatch } from "./status.ts";
import { serveStatus } from "./status-http.ts";
import {
  EXIT_LISTENER_FAILED,
  EXIT_MAX_REQUESTS,
  EXIT_RETIRED,
  EXIT_START_FAILED,
  isAdmitRequest,
  isRequestNote,
  LEAVE,
  REOPEN,
  reportsState,
  RETIRE,
  WORKER_FLAG,
  workerConfig,
  type WorkerMessage,
} from "./protocol.ts";

/** A worker as the master keeps track of it. */
interface Child {
  proc: Subprocess;
  /** The master's end of the worker's control socket. */
  control: number;
  state: "starting" | "idle" | "busy";
  startedAt: number;
  idleSince: number;
  retiring: boolean;
  served: number;
  /** Bumped by each HUP: workers of an older generation retire once the new ones wait. */
  generation: number;
  /** Its stderr until it waits (start-failures.ts). */
  output: StartOutput;
}

/** A worker that dies sooner than this after starting, having served nothing, is failing. */
const QUICK_DEATH_MS = 1000;
/** Workers started at once while the pool fills (balance()): the cores this process may use. */
const STARTS_AT_ONCE = Math.max(1, navigator.hardwareConcurrency);
/** How long a USR2 successor may take to serve before it is given up (TERM) and the old master serves on. */
const SUCCESSOR_TIMEOUT_MS = 30_000;

export class WorkerPool {
  private readonly workers = new Map<number, Child>();
  private stopping = false;
  private readonly backoff = new Backoff();
  private restartTimer: Timer | undefined;
  private lastStatus = "";
  private readonly workerEnv: Record<string, string>;
  private allGone: (() => void) | undefined;
  private readonly admissions: Admissions | undefined;
  /** The first MIN workers have said they wait in accept: socket serves (READY=1, -b released). */
  private ready = false;
  /** What `ps` shows for a worker: which pool it belongs to. */
  private readonly title: string;
  /** --status, --slow: counters and timings (status.ts); undefined otherwise, and nothing is counted. */
  private readonly watch: PoolWatch | undefined;
  /** MIN and MAX, which TTIN and TTOU move. */
  private readonly policy: PoolPolicy;
  private generation = 0;
  /** Failures in a row, before the pool first served, that trying again cannot mend (start-failures.ts). */
  private permanentInARow = 0;
  /** Socket's stderr is open: a starting worker's goes to a pipe, and this is passed as its STDERR_FD. */
  private readonly holdsStderr = stderrOpen();
  /** USR2's new master, until it serves (then this one hands over) or fails. */
  private successor: Subprocess | undefined;
  /** Set once a successor serves: the UNIX socket path is its now, not to be unlinked. */
  handedOver = false;

  constructor(
    private readonly listenFd: number,
    policy: PoolPolicy,
    private readonly options: Options,
    private readonly argv: string[],
    address: Address,
    /** A USR2 successor: the old master still holds the status page's address. */
    successor: boolean,
  ) {
    this.policy = { ...policy };
    const config = workerConfig(options, address, this.logFile(), this.holdsStderr);
    this.workerEnv = { ...(process.env as Record<string, string>), ...NO_LAZY_THREADS, ...config };
    if (options.maxPerSource !== undefined) this.admissions = new Admissions(options.maxPerSource);
    this.title = `socket: worker of ${address.kind === "unix" ? address.path : address.port}`;
    if (options.status !== undefined || options.slowMs !== undefined) {
      this.watch = new PoolWatch(listenFd, address.kind === "unix", options.slowMs, options.status !== undefined);
    }
    if (options.status !== undefined) {
      const watch = this.watch!;
      const pool = address.kind === "unix" ? address.path : `${address.family === 6 ? `[${address.ip}]` : address.ip}:${address.port}`;
      serveStatus(
        options.status,
        options,
        () => watch.snapshot(pool, policy.max > policy.min, [...this.workers].map(([pid, w]) => ({ pid, state: w.state, served: w.served, startedAt: w.startedAt }))),
        successor,
        () => this.handedOver,
        () => this.policy.max,
      );
    }
  }

  start(): void {
    this.balance();
    if (this.policy.max > this.policy.min) setInterval(() => this.shrink(), Math.min(1000, this.policy.idleTimeoutMs / 2)).unref();
  }

  /** -b --log FILE: the daemon's stdout and stderr (without -b there is no log of socket's own). */
  private logFile(): string | undefined {
    return this.options.background ? logFileName() : undefined;
  }

  /** Workers of the current generation, not retiring: the pool as its policy counts it. */
  private current(): Child[] {
    return [...this.workers.values()].filter((w) => !w.retiring && w.generation === this.generation);
  }

  private count(state: Child["state"]): number {
    return this.current().filter((w) => w.state === state).length;
  }

  /** Starts the workers the policy wants now: at least MIN, and a spare while below MAX. */
  private balance(): void {
    if (this.stopping) return;
    const { min, max, ramp } = this.policy;
    const wait = this.backoff.delay();
    if (wait > 0) {
      this.restartTimer ??= setTimeout(() => {
        this.restartTimer = undefined;
        this.balance();
      }, wait);
      return;
    }
    const active = () => this.current().length;
    try {
      // At most as many start at once as there are cores: each start is a
      // whole executable's (15-20 ms of CPU), and -W 64 started at once on 2
      // cores made the first wait for nearly all of them. The rest follow as
      // each says it waits (onMessage balances again).
      while (active() < min && this.count("starting") < STARTS_AT_ONCE) this.spawn();
      const ready = this.count("idle") + this.count("starting");
      if (ready === 0 && active() < max) {
        const grow = ramp === "burst" ? max - active() : 1;
        for (let i = 0; i < grow; i++) this.spawn();
      }
    } catch (e) {
      // fork failed (EAGAIN, EMFILE, ENOMEM): try again later rather than stay short.
      this.backoff.fail();
      const failure = spawnFailure(e, selfCommand()[0]);
      const serving = this.count("idle") + this.count("busy");
      if (!this.lasting(failure)) say(`cannot start a worker: ${failure.why}; ${serving} running; trying again in ${this.backoff.delay()} ms`);
      this.balance();
    }
    this.reportStatus();
    // Full: every worker busy and no more may start; a connection now waits.
    this.watch?.balanced(this.count("idle") + this.count("starting") === 0 && active() >= max);
  }

  private spawn(): void {
    // A socket pair, not a pipe: a retire byte sent to a worker that has
    // just died must give EPIPE (MSG_NOSIGNAL), not a SIGPIPE that ends the master.
    const [control, workerEnd] = socketPair();
    let proc: Subprocess;
    try {
      // argv0 renames the worker for ps; the executable finds itself through /proc/self/exe.
      proc = spawn([...selfCommand(), WORKER_FLAG], {
        argv0: this.title,
        // Index = the worker's descriptor number: LISTEN_FD 3, CONTROL_FD 4, STDERR_FD 5 (fd 2 a pipe until it waits).
        stdio: this.holdsStderr ? ["ignore", "inherit", "pipe", this.listenFd, workerEnd, 2] : ["ignore", "inherit", "inherit", this.listenFd, workerEnd],
        env: this.workerEnv,
        serialization: "json",
        ipc: (message: WorkerMessage) => this.onMessage(proc.pid, message),
        onExit: (_p, code, signal) => this.onExit(proc.pid, code, signal),
      });
    } catch (e) {
      close(control);
      throw e;
    } finally {
      close(workerEnd); // the worker has its copy; ours would hide the master's death from it
    }
    const now = Date.now();
    const output = new StartOutput(proc.stderr instanceof ReadableStream ? proc.stderr : undefined);
    this.workers.set(proc.pid, { proc, control, state: "starting", startedAt: now, idleSince: now, retiring: false, served: 0, generation: this.generation, output });
    this.watch?.started(proc.pid);
    verbose(this.options, `pool: worker ${proc.pid} started`);
  }

  private onMessage(pid: number, message: WorkerMessage): void {
    const worker = this.workers.get(pid);
    if (!worker) return;
    if (isAdmitRequest(message)) {
      return this.admissions?.ask(pid, message, (verdict) => {
        try {
          worker.proc.send(verdict);
        } catch {
          // the worker is gone; its exit releases the count
        }
      });
    }
    if (message === "failed" || message === "refused" || isRequestNote(message)) {
      if (this.watch) this.noted(pid, message);
      return;
    }
    if (message === "busy") {
      worker.state = "busy";
      worker.served++;
      this.watch?.busy(pid, this.count("busy"));
    } else {
      this.watch?.idle(pid);
      // A worker that has started is what ends a run of failures (not a busy
      // one: busy workers say so while others still cannot start).
      if (worker.state === "starting") {
        this.backoff.reset();
        this.permanentInARow = 0;
        worker.output.pass();
      }
      this.admissions?.release(pid);
      worker.state = "idle";
      worker.idleSince = Date.now();
    }
    if (!this.ready && this.count("idle") + this.count("busy") >= this.policy.min) {
      this.ready = true;
      serving();
    }
    this.retireReplaced();
    this.balance();
  }

  private onExit(pid: number, code: number | null, signal: NodeJS.Signals | number | null): void {
    const worker = this.workers.get(pid);
    if (!worker) return;
    // One that never waited: what it said is read to its end first, for the line below.
    if (worker.state === "starting" && !worker.output.settled) return void worker.output.ended().then(() => this.onExit(pid, code, signal));
    this.workers.delete(pid);
    this.watch?.ended(pid);
    this.admissions?.release(pid);
    close(worker.control);
    const why = signal
      ? `killed by ${signal}`
      : code === EXIT_MAX_REQUESTS
        ? "served its --max-requests"
        : code === EXIT_RETIRED
          ? "retired"
          : code === EXIT_LISTENER_FAILED
            ? "could not accept"
            : code === EXIT_START_FAILED
              ? "could not set itself up"
              : `failed (exit ${code})`;
    verbose(this.options, `pool: worker ${pid} ended (${why})`);
    if (this.workers.size === 0) this.allGone?.();
    if (this.stopping) return;
    const byPolicy = code === EXIT_MAX_REQUESTS || code === EXIT_RETIRED || worker.retiring;
    const setUpFailed = code === EXIT_START_FAILED && worker.state === "starting";
    const failedAtOnce = !byPolicy && worker.served === 0 && (setUpFailed || Date.now() - worker.startedAt < QUICK_DEATH_MS);
    // A listener that fails every accept would fail the next worker too: never replace it at once.
    if (failedAtOnce || code === EXIT_LISTENER_FAILED) {
      this.backoff.fail(); // never a tight loop of dying workers
      // Always said (the backoff paces it): with no worker serving, clients
      // would hang in the backlog with nothing in the log.
      const serving = this.count("idle") + this.count("busy");
      const words = worker.state === "starting" ? worker.output.words() : undefined;
      const failure = `worker ${pid} ${why}${failedAtOnce && !setUpFailed ? " at start" : ""}${words ? `: ${words}` : ""}`;
      const delay = this.backoff.delay();
      if (this.lasting({ why: failure, permanent: setUpFailed })) return this.balance();
      if (serving === 0) say(`no worker is running: ${failure}; trying again in ${delay} ms`);
      else say(`cannot start a worker: ${failure}; ${serving} running; trying again in ${delay} ms`);
    }
    this.balance();
  }

  /**
   * A failed start that trying again cannot mend, before the pool first
   * served: tried PERMANENT_TRIES times in a row (quietly, -v says so), then
   * socket gives up. Whether it was dealt with here (no retry line to say).
   */
  private lasting(failure: StartFailure): boolean {
    if (this.ready || !failure.permanent) {
      this.permanentInARow = 0;
      return false;
    }
    if (++this.permanentInARow < PERMANENT_TRIES) verbose(this.options, `pool: cannot start a worker: ${failure.why}; trying again`);
    else void this.giveUp(failure.why);
    return true;
  }

  /** No worker can start: one line (-b's caller says it and exits with its status), what was started is ended, and socket exits. */
  private async giveUp(why: string): Promise<void> {
    if (this.stopping) return;
    const fatal = new Fatal(`no worker can start: ${why}`, 1);
    write(fatal.text);
    reportFatal(fatal.text, fatal.status);
    await this.stop(undefined, 0);
    exitNow(fatal.status);
  }

  /** --status's counts of what happened in a worker (not its state). */
  private noted(pid: number, message: "failed" | "refused" | { request: string }): void {
    const watch = this.watch!;
    if (message === "failed") watch.counters.failedPrograms++;
    else if (message === "refused") watch.counters.refused++;
    else watch.request(pid, message.request);
  }

  /** Retires one worker idle longer than --idle-timeout, while above MIN. */
  private shrink(): void {
    if (this.stopping) return;
    const active = this.current();
    if (active.length <= this.policy.min) return;
    const now = Date.now();
    const idle = active.find((w) => w.state === "idle" && now - w.idleSince >= this.policy.idleTimeoutMs);
    if (!idle) return;
    idle.retiring = true;
    sendByte(idle.control, RETIRE); // EPIPE: it is already gone, its exit is on the way
  }

  /**
   * HUP: every worker is replaced, so a changed program (or CGI, or
   * socket's own executable) is what serves next. The new ones start first
   * (as many as now serve, at least MIN); the old ones go (LEAVE: each
   * finishes its connection, the queue waits for the new ones) only once
   * MIN new ones wait, so nothing is refused meanwhile.
   */
  reload(): void {
    if (this.stopping) return;
    const old = this.current().length;
    this.generation++;
    say(`HUP: replacing ${old} worker${old === 1 ? "" : "s"}`);
    const want = Math.min(this.policy.max, Math.max(this.policy.min, old));
    try {
      for (let i = 0; i < want; i++) this.spawn();
    } catch (e) {
      say(`cannot start a worker: ${spawnFailure(e, selfCommand()[0]).why}`); // balance() retries after its backoff
      this.backoff.fail();
    }
    this.balance();
  }

  /** Once MIN workers of the new generation wait, the older ones leave. */
  private retireReplaced(): void {
    if (this.count("idle") + this.count("busy") < this.policy.min) return;
    for (const w of this.workers.values()) {
      if (w.generation === this.generation || w.retiring) continue;
      w.retiring = true;
      sendByte(w.control, LEAVE); // EPIPE: it is already gone, its exit is on the way
    }
  }

  /** TTIN (+1) and TTOU (-1): one worker more or fewer; a MIN:MAX pool moves both. */
  resize(by: 1 | -1): void {
    if (this.stopping) return;
    const name = by > 0 ? "TTIN" : "TTOU";
    const { min, max } = this.policy;
    if (max + by > MAX_WORKERS || min + by < 1) {
      say(`${name}: the pool stays at ${min === max ? min : `${min}:${max}`} workers (${by > 0 ? `at most ${MAX_WORKERS}` : "at least 1"})`);
      return;
    }
    this.policy.min += by;
    this.policy.max += by;
    say(`${name}: ${min + by}${min === max ? "" : `:${max + by}`} workers${min === max ? "" : " (MIN and MAX move together)"}`);
    if (by > 0) return this.balance();
    const current = this.current();
    if (current.length <= this.policy.max) return;
    // An idle one if the pool knows (a fixed pool's workers do not report): it leaves at once.
    const one = current.find((w) => w.state === "idle" && reportsState(this.options)) ?? current.find((w) => w.state === "starting") ?? current[0];
    one.retiring = true;
    sendByte(one.control, LEAVE);
  }

  /** USR1: -b's --log is opened again at its path, here and in every worker (logrotate moved the old file). */
  reopenLog(): void {
    const logFile = this.logFile();
    if (logFile === undefined) {
      say("USR1: no -b --log file to reopen; ignored");
      return;
    }
    try {
      reopenLog(logFile);
    } catch (e) {
      say(`USR1: ${(e as Error).message}; still writing to the old file`);
      return;
    }
    for (const w of this.workers.values()) sendByte(w.control, REOPEN); // EPIPE: it is gone, its exit is on the way
    verbose(this.options, `USR1: reopened ${logFile}`);
  }

  /**
   * USR2: the executable at socket's path (an operator may have put a new
   * one there) starts with the same command line as a successor master,
   * on this listener (its fd 3). Once its workers wait it says so (Bun's
   * IPC), and this master hands over: drains and exits. A successor that
   * cannot start, exits or never serves leaves this one serving.
   */
  upgrade(): void {
    if (this.stopping) return;
    if (this.successor) {
      say(`USR2: the new master ${this.successor.pid} is still starting; ignored`);
      return;
    }
    const command = selfCommand();
    const pidFd = pidFileDescriptor();
    let proc: Subprocess;
    try {
      proc = spawn([...command, ...this.argv], {
        cwd: startDir,
        // Index = the successor's descriptor: the listener 3, the pid file SUCCESSOR_PID_FD (4).
        stdio: ["ignore", "inherit", "inherit", this.listenFd, ...(pidFd === undefined ? [] : [pidFd])],
        env: {
          ...(process.env as Record<string, string>),
          ...NO_LAZY_THREADS,
          ...notifyEnv(),
          [SUCCESSOR_ENV]: String(process.pid),
          ...(pidFd === undefined ? {} : { [PID_FD_ENV]: String(SUCCESSOR_PID_FD) }),
        },
        serialization: "json",
        ipc: (message: unknown) => {
          if (message === "ready" && this.successor === proc) void this.handOver(proc);
        },
        onExit: (_p, code, signal) => {
          if (this.successor !== proc || this.stopping) return;
          this.successor = undefined;
          say(`USR2: the new master ${proc.pid} ${signal ? `was killed by ${signal}` : `exited with status ${code}`} before it served; this master (${process.pid}) serves on`);
        },
      });
    } catch (e) {
      const errno = (e as { errno?: number }).errno;
      const why = typeof errno === "number" ? strerror(Math.abs(errno)) : (e as Error).message;
      say(`USR2: cannot start ${command[0]}: ${why}; this master (${process.pid}) serves on`);
      return;
    }
    this.successor = proc;
    say(`USR2: started ${command[0]} as the new master ${proc.pid}`);
    setTimeout(() => {
      if (this.successor !== proc || this.stopping) return;
      say(`USR2: the new master ${proc.pid} did not serve within ${SUCCESSOR_TIMEOUT_MS / 1000} s; ending it, this master serves on`);
      proc.kill("SIGTERM");
    }, SUCCESSOR_TIMEOUT_MS).unref();
  }

  /** The successor serves: systemd is told its pid, this master's workers leave, and it exits. */
  private async handOver(successor: Subprocess): Promise<void> {
    mainPid(successor.pid);
    say(`USR2: the new master ${successor.pid} serves; ${process.pid} drains and exits`);
    this.handedOver = true;
    handOverPidFile(); // after -u, its check could fail and truncate the successor's file
    await this.stop(successor.pid);
    exitNow(0);
  }

  private reportStatus(): void {
    if (!this.ready) return; // "status" counts workers that wait, not ones still starting
    const status = `status: ${this.count("busy")}/${this.workers.size}`;
    if (status === this.lastStatus) return;
    this.lastStatus = status;
    verbose(this.options, status);
  }

  /**
   * Drains: every worker is sent the retire byte, finishes its connection
   * and serves what already waits in the listener's queue; the listener
   * closes with the last of them. Not shutdown(): on a listener that resets
   * every queued connection (34 of 40 clients waiting in a -W 2 pool were).
   * Within the grace period; then what is left is ended.
   */
  async stop(successor?: number, graceMs = this.policy.graceMs): Promise<void> {
    this.stopping = true;
    // A successor's workers serve the queue: this master's just finish their connections.
    if (successor === undefined) stopping();
    else this.successor = undefined;
    this.successor?.kill("SIGTERM"); // an upgrade under way is abandoned
    clearTimeout(this.restartTimer);
    close(this.listenFd); // our copy: the workers' keep the queue until they have drained it
    for (const worker of this.workers.values()) sendByte(worker.control, successor === undefined ? RETIRE : LEAVE);
    if (this.workers.size > 0) {
      const gone = new Promise<void>((resolve) => (this.allGone = resolve));
      await Promise.race([gone, Bun.sleep(graceMs)]);
    }
    // Grace is over: whatever socket started and still runs (programs, what
    // they forked, busy workers) gets TERM, then KILL.
    const cut = await endDescendants(new Set(this.workers.keys()), successor);
    if (cut > 0) verbose(this.options, `pool: ${cut} process${cut === 1 ? "" : "es"} cut short (TERM, then KILL after ${KILL_AFTER_MS / 1000} s)`);
  }
}

export function runPool(
  argv: string[],
  options: Options,
  policy: PoolPolicy,
  address: Address,
  /** Gets the UNIX socket file socket created (not a passed one's). */
  afterBind: (socketFile: string | undefined, statusFile: string | undefined) => void,
  /** A USR2 successor: the old master's listener is fd 3, as a passed socket is (`address` is its). */
  inherited = false,
): WorkerPool {
  const passed = options.destination.kind === "passed";
  accessRules(options, address); // refused on a UNIX socket, before any worker starts
  // A passed socket is the service manager's: the master only keeps a copy, and never unlinks its path.
  let listenFd: number;
  let bound = address;
  let pool: WorkerPool | undefined;
  if (passed || inherited) {
    listenFd = passedListener();
  } else {
    const listening = listen<undefined>(address, { data() {} }, { mode: options.mode, deferAcceptSecs: options.deferAcceptSecs });
    listenFd = detachListener(listening);
    bound = listening.address;
  }
  const socketFile = bound.kind === "unix" && !passed ? bound.path : undefined;
  if (socketFile !== undefined) {
    atExit(() => {
      if (pool?.handedOver) return; // the successor serves on that path, and removes it at its end
      try {
        unlinkSync(socketFile);
      } catch {
        // already gone
      }
    });
  }
  // Before afterBind: --status binds while still privileged, as the listener did.
  pool = new WorkerPool(listenFd, policy, options, argv, bound, inherited);
  afterBind(socketFile, options.status?.kind === "unix" ? options.status.path : undefined); // --status's file gets -u/-g too
  // After afterBind: once this line is out, the socket file has its -u/-g owner.
  verbose(options, listeningMessage(bound));
  pool.start();
  return pool;
}
