// One way to start a program: startProcess(spec, engine) makes a Process,
// whoever starts it (a connection's -p program, a request's CGI).
// "blocking": the caller's thread waits for it (a pool worker has nothing
// else to do): posix_spawn (system/spawn.ts) rather than Bun.spawn, its end
// read from its pidfd by the thread's own poll, where Bun.spawn's
// machinery (a Subprocess, its promise, Bun's own pidfd in its loop, the
// environment converted again) costs a worker a large share of its CPU per
// start. "evented": Bun's loop must own it (-f, the classic server, the
// client, --timeout's timers): Bun.spawn (bun-process.ts), but for an
// environment with bytes Bun.spawn cannot pass (it encodes strings as
// UTF-8), which posix_spawn starts and SIGCHLD reports.
// A program gets what Bun.spawn gives: descriptors 0-2 only, every
// signal at its default (but 32 and 33, glibc's own, which its posix_spawn
// cannot reset when socket itself was started with them ignored) and none
// blocked. A blocking wait runs no timer (--timeout keeps Bun's loop), and
// signal handlers run at the wait's EINTR.
import { close, pipe } from "../system/fd.ts";
import { EINTR, SysError } from "../system/ffi.ts";
import { openReadWrite } from "../system/files.ts";
import { isReadable, POLLIN, tryPoll } from "../system/poll.ts";
import { pidfdOpen, reapPidfd, signal } from "../system/process.ts";
import { ownChild, signalSession } from "../system/reaper.ts";
import { nextTick } from "../system/signals.ts";
import { canSpawn, CStrings, spawn } from "../system/spawn.ts";
import { BunProcess, endedWithin, type EnvEntry, type InheritedEnvironment, type PipedProcess, type ProcessSpec, type ProgramInput, type Stdio } from "./bun-process.ts";
import { os } from "../system/builtins.ts";

export type { Environment, EnvEntry, PipedProcess, Process, ProcessSpec, ProgramInput, Stdio } from "./bun-process.ts";

/** The name of signal or errno `n` in `table` (node:os's constants), when it has one. */
const nameOf = (table: Record<string, number>, n: number) => Object.entries(table).find(([, v]) => v === n)?.[0];

/**
 * Starts a program. Throws what the start threw (an Error whose `code` is
 * the errno's name, ENOENT, EACCES...). A blocking one has no pipe of
 * ours (its stdin, stdout and stderr are undefined); it is started by Bun
 * where this libc cannot (glibc before 2.34): then its bytes that are not
 * UTF-8 arrive as U+FFFD.
 */
export function startProcess(spec: ProcessSpec<Exclude<Stdio, "pipe">>, engine: "blocking"): PipedProcess;
export function startProcess(spec: ProcessSpec, engine: "evented"): PipedProcess;
export function startProcess(spec: ProcessSpec, engine: "blocking" | "evented"): PipedProcess {
  if (canSpawn() && (engine === "blocking" || spec.env.own.some(([, value]) => typeof value !== "string"))) {
    return Spawned.start(spec, engine);
  }
  return new BunProcess(spec);
}

/** socket's own environment for programs: made once, as a record (Bun.spawn) and as C strings (posix_spawn). */
export class Inherited implements InheritedEnvironment {
  private table: CStrings | undefined;
  constructor(private readonly vars: Readonly<Record<string, string>>) {}

  /** A copy, for Bun.spawn. */
  record(): Record<string, string> {
    return { ...this.vars };
  }

  /** envp with `own` after the inherited variables. */
  envp(own: readonly EnvEntry[]): BigUint64Array {
    this.table ??= new CStrings(Object.entries(this.vars).map(([name, value]) => `${name}=${value}`));
    return this.table.with(own.map(([name, value]) => (typeof value === "string" ? `${name}=${value}` : Buffer.concat([Buffer.from(`${name}=`), value]))));
  }
}

/** A program's path and argv as C strings, made once per argv (a -p program's is the same for every connection). */
const argvTables = new WeakMap<readonly string[], { path: Buffer; argv: CStrings }>();

function argvOf(spec: ProcessSpec): { path: Buffer; argv: BigUint64Array } {
  let table = argvTables.get(spec.argv);
  if (!table) argvTables.set(spec.argv, (table = { path: Buffer.from(`${spec.argv[0]}\0`), argv: new CStrings([spec.argv0, ...spec.argv.slice(1)]) }));
  return { path: table.path, argv: table.argv.with() };
}

/** The last directory as a C string: a -p CGI's is the same for every request. */
let lastDirectory: { path: string; bytes: Buffer } | undefined;

function directory(path: string): Buffer {
  if (lastDirectory?.path !== path) lastDirectory = { path, bytes: Buffer.from(`${path}\0`) };
  return lastDirectory.bytes;
}

/** Our ends of what "pipe" made, and descriptors to close once the program has its own. */
interface Ends {
  fds: [number, number, number];
  ours: [number | undefined, number | undefined, number | undefined];
  theirs: number[];
}

let nullFd: number | undefined;

/** /dev/null, opened once for every program's "ignore"; close-on-exec: only the programs it is given to as a descriptor get it. */
function devNull(): number {
  nullFd ??= openReadWrite("/dev/null");
  return nullFd;
}

/** The caller's stdio as descriptors: a pipe's far end (evented only), /dev/null, or socket's own. */
function descriptors(stdio: readonly [Stdio, Stdio, Stdio]): Ends {
  const ends: Ends = { fds: [0, 1, 2], ours: [undefined, undefined, undefined], theirs: [] };
  try {
    stdio.forEach((s, i) => {
      if (typeof s === "number") ends.fds[i] = s;
      else if (s === "inherit") ends.fds[i] = i;
      else if (s === "ignore") ends.fds[i] = devNull();
      else {
        const [read, write] = pipe();
        [ends.fds[i], ends.ours[i]] = i === 0 ? [read, write] : [write, read];
        ends.theirs.push(ends.fds[i]);
      }
    });
  } catch (e) {
    for (const fd of [...ends.theirs, ...ends.ours]) if (fd !== undefined) close(fd);
    throw e;
  }
  return ends;
}

/** A failed start as Bun.spawn reports one: an Error with the errno's name as its code. */
function startError(e: unknown): unknown {
  if (!(e instanceof SysError)) return e;
  return Object.assign(new Error(`${e.reason} (posix_spawn)`), { code: nameOf(os().constants.errno, e.errno) ?? String(e.errno) });
}

/** Evented programs waiting for their SIGCHLD. */
const watched = new Set<Spawned>();
/**
 * Blocking programs not reaped yet: one whose caller went on without
 * waiting (its end read from its pidfd or waitid) is reaped at the next
 * start, as Bun would have reaped it.
 */
const unreaped = new Set<Spawned>();
let listening = false;

function onChildEnded(): void {
  for (const child of watched) child.poll();
}

/** A program posix_spawn started. */
export class Spawned {
  private result: { code: number | null; signal: string | null } | undefined;
  private readonly reaper: { reaped(): void };
  /** When a stop()'s KILL is due; a blocking wait sends it (no timer runs meanwhile). */
  private killAt: number | undefined;
  private ended: ((status: number) => void) | undefined;
  private readonly done: Promise<number> | undefined;
  stdin: ProgramInput | undefined;
  stdout: ReadableStream<Uint8Array<ArrayBuffer>> | undefined;
  stderr: ReadableStream<Uint8Array<ArrayBuffer>> | undefined;

  private constructor(
    readonly pid: number,
    /** Readable when the program has ended; watched by a pool worker's own wait (--prestart). */
    readonly pidfd: number,
    private readonly ownGroup: boolean,
    evented: boolean,
  ) {
    this.reaper = ownChild(pid);
    if (!evented) {
      unreaped.add(this);
      return;
    }
    this.done = new Promise((resolve) => (this.ended = resolve));
    watched.add(this);
    if (!listening) process.on("SIGCHLD", onChildEnded);
    listening = true;
    queueMicrotask(() => this.poll()); // it may have ended before it was watched
  }

  /** Starts the program as `spec` says; throws as Bun.spawn does when it cannot. */
  static start(spec: ProcessSpec, engine: "blocking" | "evented"): Spawned {
    for (const child of unreaped) child.poll();
    const { path, argv } = argvOf(spec);
    const ends = descriptors(spec.stdio);
    let pid: number;
    try {
      const cwd = spec.cwd === undefined ? undefined : directory(spec.cwd);
      pid = spawn({ path, argv, envp: spec.env.inherited.envp(spec.env.own), stdio: ends.fds, cwd, ownGroup: spec.ownGroup });
    } catch (e) {
      for (const fd of ends.ours) if (fd !== undefined) close(fd);
      throw startError(e);
    } finally {
      for (const fd of ends.theirs) close(fd); // the program has its own
    }
    let pidfd: number;
    try {
      pidfd = pidfdOpen(pid);
    } catch (e) {
      process.kill(pid, "SIGKILL"); // not to be left unwatched
      throw e;
    }
    const child = new Spawned(pid, pidfd, spec.ownGroup, engine === "evented");
    child.adopt(ends.ours);
    return child;
  }

  /** Our pipe ends as Bun's streams; each descriptor closed when its stream is done. */
  private adopt([input, output, errors]: Ends["ours"]): void {
    if (input !== undefined) {
      const sink = Bun.file(input).writer();
      // Closed once what the sink holds is written: the program's EOF.
      const end = () => {
        let ended: number | Promise<number>;
        try {
          ended = sink.end();
        } catch (e) {
          close(input);
          throw e;
        }
        if (!(ended instanceof Promise)) close(input);
        else void ended.finally(() => close(input)).catch(() => {});
        return ended;
      };
      this.stdin = { write: (bytes) => sink.write(bytes), flush: () => sink.flush(), end };
    }
    if (output !== undefined) this.stdout = closingStream(output);
    if (errors !== undefined) this.stderr = closingStream(errors);
  }

  get exitCode(): number | null {
    return this.result?.code ?? null;
  }

  get signalCode(): string | null {
    return this.result?.signal ?? null;
  }

  /** Whether it has ended (not yet reaped). */
  hasEnded(): boolean {
    return this.result !== undefined || isReadable(this.pidfd);
  }

  /** Reaps it if it has ended. */
  poll(): boolean {
    if (this.result) return true;
    // Stopped, and ended: what it started may ignore TERM, so its session
    // (system/reaper.ts signalSession) gets the KILL now, while its zombie
    // still reserves the group's id. Once it
    // is reaped the id may be another process's (no timer may outlive it).
    if (this.killAt !== undefined && isReadable(this.pidfd)) {
      if (this.ownGroup) signalSession(this.pid, "SIGKILL");
      this.killAt = undefined;
    }
    let ended: ReturnType<typeof reapPidfd>;
    try {
      ended = reapPidfd(this.pidfd);
    } catch {
      ended = { code: null, signal: null }; // reaped by another (ECHILD): how it ended is not known
    }
    if (!ended) return false;
    close(this.pidfd);
    this.reaper.reaped();
    watched.delete(this);
    unreaped.delete(this);
    this.result = { code: ended.code, signal: ended.signal === null ? null : (nameOf(os().constants.signals, ended.signal) ?? `signal ${ended.signal}`) };
    this.ended?.(this.status());
    return true;
  }

  private status(): number {
    const { code, signal } = this.result!;
    return code ?? 128 + (os().constants.signals[signal as NodeJS.Signals] ?? 0);
  }

  /** Blocking: waits in poll(2) until it ends (or `timeoutMs` passes), then reaps it. A signal's handlers run at EINTR. */
  async wait(timeoutMs?: number): Promise<boolean> {
    if (this.done) return endedWithin(this.done, timeoutMs);
    const fds = new Int32Array([this.pidfd, POLLIN]);
    const end = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
    // Mostly asked once its end is known (its pidfd was readable): reaped without a poll.
    this.poll();
    while (!this.result) {
      if (this.killAt !== undefined && Date.now() >= this.killAt) {
        this.kill("SIGKILL");
        this.killAt = undefined;
      }
      const until = Math.min(end, this.killAt ?? Infinity);
      const ready = tryPoll(fds, 1, until === Infinity ? -1 : Math.max(0, until - Date.now()));
      if (ready === -EINTR) await nextTick();
      else if (ready < 0) throw new SysError("poll", -ready);
      else if (ready > 0) this.poll();
      else if (Date.now() >= end) return false;
    }
    return true;
  }


  /** The exit status; of a blocking one, read by waiting for it here. */
  get exited(): Promise<number> {
    if (this.done) return this.done;
    return this.wait().then(() => this.status());
  }

  kill(name: NodeJS.Signals = "SIGTERM"): void {
    if (this.result) return; // reaped: its pid may be another's now
    if (!this.ownGroup || !signalSession(this.pid, name)) signal(this.pid, false, name);
  }

  stop(graceMs: number): void {
    this.kill("SIGTERM");
    if (this.result) return;
    this.killAt = Date.now() + graceMs;
    if (this.done) setTimeout(() => (this.result ? undefined : this.kill("SIGKILL")), graceMs).unref();
  }
}

/** A pipe's read end as a stream, closed at its end or cancel. */
function closingStream(fd: number): ReadableStream<Uint8Array<ArrayBuffer>> {
  const reader = Bun.file(fd).stream().getReader();
  let closed = false;
  const done = () => {
    if (!closed) close(fd);
    closed = true;
  };
  return new ReadableStream<Uint8Array<ArrayBuffer>>({
    async pull(controller) {
      const { done: end, value } = await reader.read();
      if (end) {
        done();
        controller.close();
      } else controller.enqueue(value);
    },
    async cancel() {
      await reader.cancel().catch(() => {});
      done();
    },
  });
}
