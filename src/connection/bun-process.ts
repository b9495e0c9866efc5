// What every started program is (Process, and the spec it starts from),
// and the one kind Bun starts: Bun.spawn where Bun's loop must own the
// program (-f, the classic server, the client, --timeout's timers) and
// posix_spawn cannot serve (process.ts). process.ts's startProcess is the
// one way to make either, and the face of these types.
import type { FileSink, Subprocess } from "bun";
import { withChildSignal } from "../system/process.ts";
import { signalSession, spawn } from "../system/reaper.ts";

/** A started program, whichever way it started. */
export interface Process {
  readonly pid: number;
  /**
   * Its exit status, 128 + the signal's number when one ended it. Of a
   * blocking one: reading it blocks the thread until the program ends.
   */
  readonly exited: Promise<number>;
  readonly exitCode: number | null;
  /** The signal that ended it ("SIGKILL"), or null. */
  readonly signalCode: string | null;
  /** Signals it, or its whole process group when it leads one. Nothing once it is reaped. */
  kill(signal?: NodeJS.Signals): void;
  /** Whether it ended within `timeoutMs` (undefined: waits for ever). */
  wait(timeoutMs?: number): Promise<boolean>;
  /** TERM now, KILL `graceMs` later (to its group even when it has gone: what it started may ignore TERM). */
  stop(graceMs: number): void;
  /** A blocking one's pidfd, readable once it has ended (for the caller's own poll); open until it is reaped. */
  readonly pidfd?: number;
}

/** An evented program, with the ends of its "pipe" descriptors. */
export interface PipedProcess extends Process {
  readonly stdin: ProgramInput | undefined;
  readonly stdout: ReadableStream<Uint8Array<ArrayBuffer>> | undefined;
  readonly stderr: ReadableStream<Uint8Array<ArrayBuffer>> | undefined;
}

/** A variable of a program's own: its value a string, or bytes that are not UTF-8. */
export type EnvEntry = readonly [name: string, value: string | Uint8Array];

/** An environment: socket's own (made once) and the program's own variables, whose names are not in it. */
export interface Environment {
  inherited: InheritedEnvironment;
  own: readonly EnvEntry[];
}

/** socket's own environment, made once (process.ts Inherited): a record for Bun.spawn, C strings for posix_spawn. */
export interface InheritedEnvironment {
  record(): Record<string, string>;
  /** envp with `own` after the inherited variables. */
  envp(own: readonly EnvEntry[]): BigUint64Array;
}

/** A descriptor, /dev/null, socket's own, or (evented only) a new pipe. */
export type Stdio = number | "pipe" | "ignore" | "inherit";

export interface ProcessSpec<S extends Stdio = Stdio> {
  /** argv[0] is the file executed (a path). */
  argv: readonly string[];
  /** argv[0] as the program sees it. */
  argv0: string;
  /** Its working directory; undefined: socket's. */
  cwd?: string;
  env: Environment;
  stdio: readonly [S, S, S];
  /** It leads a session and process group of its own, and kill() signals the whole group. */
  ownGroup: boolean;
}

/** Where a program's stdin is written ("pipe"): Bun's FileSink or the like. */
export type ProgramInput = Pick<FileSink, "write" | "flush" | "end">;

/** Whether `exited` settles within `timeoutMs` (undefined: waits for ever), on Bun's loop. */
export async function endedWithin(exited: Promise<unknown>, timeoutMs: number | undefined): Promise<boolean> {
  if (timeoutMs === undefined) return (await exited, true);
  let timer: Timer | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
  const ended = await Promise.race([exited.then(() => true), late]);
  clearTimeout(timer);
  return ended;
}

/** A program Bun.spawn started (and Bun reaps). */
export class BunProcess implements PipedProcess {
  private readonly sub: Subprocess<"pipe" | "ignore" | "inherit", "pipe" | "ignore" | "inherit", "pipe" | "ignore" | "inherit">;
  private readonly ownGroup: boolean;

  constructor(spec: ProcessSpec) {
    const own = Object.fromEntries(spec.env.own.map(([name, value]) => [name, typeof value === "string" ? value : new TextDecoder().decode(value)]));
    // Bun.spawn passes on the caller's signal mask: a pool worker's blocked SIGCHLD is not the program's.
    this.sub = withChildSignal(false, () => spawn([...spec.argv], {
      argv0: spec.argv0,
      cwd: spec.cwd,
      stdio: [spec.stdio[0], spec.stdio[1], spec.stdio[2]],
      env: Object.assign(spec.env.inherited.record(), own),
      detached: spec.ownGroup, // setsid
    }));
    this.ownGroup = spec.ownGroup;
  }

  get pid(): number {
    return this.sub.pid;
  }
  get exited(): Promise<number> {
    return this.sub.exited;
  }
  get exitCode(): number | null {
    return this.sub.exitCode;
  }
  get signalCode(): string | null {
    const code = this.sub.signalCode;
    return typeof code === "number" ? `signal ${code}` : code;
  }
  get stdin(): ProgramInput | undefined {
    return typeof this.sub.stdin === "object" ? this.sub.stdin : undefined;
  }
  get stdout(): ReadableStream<Uint8Array<ArrayBuffer>> | undefined {
    return this.sub.stdout instanceof ReadableStream ? this.sub.stdout : undefined;
  }
  get stderr(): ReadableStream<Uint8Array<ArrayBuffer>> | undefined {
    return this.sub.stderr instanceof ReadableStream ? this.sub.stderr : undefined;
  }

  kill(name: NodeJS.Signals = "SIGTERM"): void {
    if (this.sub.exitCode !== null || this.sub.signalCode !== null) return; // reaped: its pid may be another's now
    // The group may have gone (or never formed): the leader alone, as Bun knows it.
    if (!this.ownGroup || !signalSession(this.pid, name)) this.sub.kill(name);
  }

  wait(timeoutMs?: number): Promise<boolean> {
    return endedWithin(this.sub.exited, timeoutMs);
  }

  stop(graceMs: number): void {
    this.kill("SIGTERM");
    // Only while Bun has not reaped it: then its pid may be another's.
    const late = setTimeout(() => this.kill("SIGKILL"), graceMs).unref();
    // At the leader's end, KILL to what is left of its session (system/reaper.ts signalSession), as a blocking engine's reap does: what it started
    // may ignore TERM and hold the connection, and a pool worker back in its blocking wait runs no timer. The
    // group's id cannot be another's while a member lives; with none left the signal finds nothing.
    void this.sub.exited.finally(() => {
      clearTimeout(late);
      if (this.ownGroup) signalSession(this.pid, "SIGKILL");
    });
  }
}
