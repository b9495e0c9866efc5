// The pool master (-W): keeps the listening descriptor (run-pool.ts binds
// it) without ever accepting on it, and keeps the pool of workers at the size its
// policy asks for. Workers say "busy" when they accept and "idle" when done
// (Bun's IPC); the master reaches a waiting worker through a control socket
// the worker watches in its epoll wait (its fd 4): one byte, RETIRE (drain
// the queue, then exit) or LEAVE (exit after the connection in hand); end
// of file means the master is gone.
// Signals (main.ts): HUP replaces every worker (reload), USR2 starts the
// executable again as a successor master on the same listener (upgrade,
// succession.ts), USR1 reopens -b's --log, TTIN/TTOU add or remove a
// worker. How many to start and which to retire: policy.ts.
import type { Subprocess } from "bun";
import type { Address } from "../net/address.ts";
import { Fatal } from "../fatal.ts";
import type { Options, PoolPolicy } from "../options.ts";
import { MAX_WORKERS } from "../cli/parse.ts";
import { handOverPidFile, logFileName, reopenLog, reportFatal } from "../system/daemon.ts";
import { close } from "../system/fd.ts";
import { sendByte } from "../system/socket.ts";
import { say, verbose, write } from "../system/log.ts";
import { mainPid, serving, stopping } from "../system/notify.ts";
import { endDescendants, KILL_AFTER_MS, stopAdopting } from "../system/reaper.ts";
import { selfCommand } from "../system/self.ts";
import { exitNow } from "../system/signals.ts";
import { NO_LAZY_THREADS, underProcessLimit } from "../system/threads.ts";
import { Admissions } from "./admission.ts";
import { Backoff } from "./backoff.ts";
import { PERMANENT_TRIES, spawnFailure, stderrOpen, type StartFailure } from "./start-failures.ts";
import { PoolWatch } from "./status.ts";
import { serveStatus } from "./status-http.ts";
import {
  EXIT_LISTENER_FAILED,
  isAdmitRequest,
  isRequestNote,
  LEAVE,
  REOPEN,
  reportsState,
  RETIRE,
  workerConfig,
  type WorkerMessage,
} from "./protocol.ts";
import { errorText } from "../fatal.ts";
import { Succession } from "./succession.ts";
import { endReason, startWorkerProcess, type WorkerLaunch, type WorkerRecord } from "./worker-process.ts";
import { exitKind, idleTooLong, oneToRemove, startsWanted } from "./policy.ts";

export class WorkerPool {
  private readonly workers = new Map<number, WorkerRecord>();
  private stopping = false;
  private stopped: Promise<void> | undefined; // the drain under way: stop() runs once
  /** The end of --grace, from the first TERM (or a start that can never succeed): the drain waits no longer. */
  private readonly graceOver = Promise.withResolvers<void>();
  private graceStarted = false;
  private readonly backoff = new Backoff();
  private restartTimer: Timer | undefined;
  private lastStatus = "";
  /** What every worker is started with (worker-process.ts). */
  private readonly launch: WorkerLaunch;
  private allGone: (() => void) | undefined;
  private readonly admissions: Admissions | undefined;
  /** The first MIN workers have said they wait in accept: socket serves (READY=1, -b released). */
  private ready = false;
  /** --status, --slow: counters and timings (status.ts); undefined otherwise, and nothing is counted. */
  private readonly watch: PoolWatch | undefined;
  /** MIN and MAX, which TTIN and TTOU move. */
  private readonly policy: PoolPolicy;
  private generation = 0;
  /** Failures in a row, before the pool first served, that trying again cannot mend (start-failures.ts). */
  private permanentInARow = 0;
  /** USR2's new master, until it serves (succession.ts). */
  private readonly succession: Succession;
  /** Set once a successor serves: the UNIX socket path is its now, not to be unlinked. */
  handedOver = false;
  private stopStatus: (() => void) | undefined; // --status's page, stopped once a successor's answers

  constructor(
    private readonly listenFd: number,
    policy: PoolPolicy,
    private readonly options: Options,
    argv: string[],
    address: Address,
    /** A USR2 successor: the old master still holds the status page's address. */
    successor: boolean,
  ) {
    this.policy = { ...policy };
    const holdsStderr = stderrOpen();
    this.launch = {
      title: `socket: worker of ${address.kind === "unix" ? address.path : address.port}`,
      listenFd,
      holdsStderr,
      env: { ...process.env, ...NO_LAZY_THREADS, ...workerConfig(options, address, this.logFile(), holdsStderr, underProcessLimit()) },
      onMessage: (pid, message) => this.onMessage(pid, message),
      onExit: (pid, code, signal) => this.onExit(pid, code, signal),
    };
    this.succession = new Succession(listenFd, argv, () => this.stopping, (next) => void this.handOver(next));
    if (options.maxPerSource !== undefined) this.admissions = new Admissions(options.maxPerSource);
    if (options.status !== undefined || options.slowMs !== undefined) {
      this.watch = new PoolWatch(listenFd, address.kind === "unix", options.slowMs, options.status !== undefined);
    }
    if (options.status !== undefined) {
      const watch = this.watch!;
      const pool = address.kind === "unix" ? address.path : `${address.family === 6 ? `[${address.ip}]` : address.ip}:${address.port}`;
      this.stopStatus = serveStatus(
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
  private current(): WorkerRecord[] {
    return [...this.workers.values()].filter((w) => !w.retiring && w.generation === this.generation);
  }

  private count(state: WorkerRecord["state"]): number {
    return this.current().filter((w) => w.state === state).length;
  }

  /** Starts the workers the policy wants now: at least MIN, and a spare while below MAX. */
  private balance(): void {
    if (this.stopping) return;
    const wait = this.backoff.delay();
    if (wait > 0) {
      this.restartTimer ??= setTimeout(() => {
        this.restartTimer = undefined;
        this.balance();
      }, wait);
      return;
    }
    try {
      const starts = startsWanted(this.policy, { active: this.current().length, starting: this.count("starting"), idle: this.count("idle") });
      for (let i = 0; i < starts; i++) this.spawn();
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
    this.watch?.balanced(this.count("idle") + this.count("starting") === 0 && this.current().length >= this.policy.max);
  }

  private spawn(): void {
    const worker = startWorkerProcess(this.launch, this.generation);
    this.workers.set(worker.proc.pid, worker);
    this.watch?.started(worker.proc.pid);
    verbose(this.options, `pool: worker ${worker.proc.pid} started`);
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
    if (message === "failed" || message === "refused" || message === "overdue" || isRequestNote(message)) {
      this.watch?.noted(pid, message);
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
    const why = endReason(code, signal);
    verbose(this.options, `pool: worker ${pid} ended (${why})`);
    if (this.workers.size === 0) this.allGone?.();
    if (this.stopping) return;
    const { setUpFailed, failedAtOnce } = exitKind(worker, code, Date.now());
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

  /** Retires one worker idle longer than --idle-timeout, while above MIN. */
  private shrink(): void {
    if (this.stopping) return;
    const idle = idleTooLong(this.current(), this.policy, Date.now());
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
    const one = oneToRemove(current, reportsState(this.options)); // an idle one leaves at once
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
      say(`USR1: ${errorText(e)}; still writing to the old file`);
      return;
    }
    for (const w of this.workers.values()) sendByte(w.control, REOPEN); // EPIPE: it is gone, its exit is on the way
    verbose(this.options, `USR1: reopened ${logFile}`);
  }

  /** USR2: a successor master on this listener (succession.ts); this one hands over once it serves. */
  upgrade(): void {
    if (!this.stopping) this.succession.start();
  }

  /** The successor serves: systemd is told its pid, this master's workers leave, and it exits. Not once stopping: it was told to end. */
  private async handOver(successor: Subprocess): Promise<void> {
    if (this.stopping) return;
    mainPid(successor.pid);
    say(`USR2: the new master ${successor.pid} serves; ${process.pid} drains and exits`);
    this.handedOver = true;
    stopAdopting();
    this.stopStatus?.(); // the new master's page alone answers while this one drains
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
   * Drains: every worker is sent the retire byte, finishes its connection and serves what already waits
   * in the listener's queue; the listener closes with the last of them. Not shutdown(): on a listener that
   * resets every queued connection (most of a -W 2 pool's waiting clients were). Within the grace period;
   * then what is left is ended. Once: a TERM during a handover's drain joins it, sparing the successor.
   * A handover's workers (LEAVE) finish their connections as a reload's do: only a TERM starts the grace.
   */
  stop(successor?: number, graceMs = this.policy.graceMs): Promise<void> {
    if (successor === undefined && !this.graceStarted) {
      this.graceStarted = true;
      setTimeout(this.graceOver.resolve, graceMs);
    }
    return (this.stopped ??= this.drain(successor));
  }

  private async drain(successor: number | undefined): Promise<void> {
    this.stopping = true;
    // A successor's workers serve the queue: this master's just finish their connections.
    if (successor === undefined) stopping();
    this.succession.end(successor !== undefined);
    clearTimeout(this.restartTimer);
    close(this.listenFd); // our copy: the workers' keep the queue until they have drained it
    for (const worker of this.workers.values()) sendByte(worker.control, successor === undefined ? RETIRE : LEAVE);
    if (this.workers.size > 0) {
      const gone = new Promise<void>((resolve) => (this.allGone = resolve));
      await Promise.race([gone, this.graceOver.promise]);
    }
    // Grace is over: whatever socket started and still runs (programs, what
    // they forked, busy workers) gets TERM, then KILL.
    const cut = await endDescendants(new Set(this.workers.keys()), successor);
    if (cut > 0) verbose(this.options, `pool: ${cut} process${cut === 1 ? "" : "es"} cut short (TERM, then KILL after ${KILL_AFTER_MS / 1000} s)`);
  }
}
