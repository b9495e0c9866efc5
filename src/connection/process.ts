// One way to start a program: startProcess(spec, engine) makes a Process,
// whoever starts it (a connection's -p program, a request's CGI).
// "blocking": the caller's thread waits for it (a pool worker has nothing
// else to do): posix_spawn, and the exit read from a pidfd by a blocking
// poll (child.ts). "evented": Bun's loop must own it (-f, the classic
// server, the client, --timeout's timers): Bun.spawn, but for an
// environment with bytes Bun.spawn cannot pass (it encodes strings as
// UTF-8), which posix_spawn starts and SIGCHLD reports (child.ts).
import type { Subprocess } from "bun";
import { canSpawn } from "../system/spawn.ts";
import { spawn } from "../system/reaper.ts";
import { endedWithin, signal, Spawned, type ProcessSpec, type ProgramInput, type Stdio } from "./child.ts";

export { Inherited, type Environment, type EnvEntry, type ProcessSpec, type ProgramInput, type Stdio } from "./child.ts";

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

/** A program Bun.spawn started (and Bun reaps). */
class BunProcess implements PipedProcess {
  private readonly sub: Subprocess<"pipe" | "ignore" | "inherit", "pipe" | "ignore" | "inherit", "pipe" | "ignore" | "inherit">;
  private readonly ownGroup: boolean;

  constructor(spec: ProcessSpec) {
    const own = Object.fromEntries(spec.env.own.map(([name, value]) => [name, typeof value === "string" ? value : new TextDecoder().decode(value)]));
    this.sub = spawn([...spec.argv], {
      argv0: spec.argv0,
      cwd: spec.cwd,
      stdio: [spec.stdio[0], spec.stdio[1], spec.stdio[2]],
      env: Object.assign(spec.env.inherited.record(), own),
      detached: spec.ownGroup, // setsid
    });
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
    if (!this.ownGroup || !signal(this.pid, true, name)) this.sub.kill(name);
  }

  wait(timeoutMs?: number): Promise<boolean> {
    return endedWithin(this.sub.exited, timeoutMs);
  }

  stop(graceMs: number): void {
    this.kill("SIGTERM");
    // Only while Bun has not reaped it: then its pid, and its group's id, may be another's.
    const late = setTimeout(() => this.kill("SIGKILL"), graceMs).unref();
    void this.sub.exited.finally(() => clearTimeout(late));
  }
}
