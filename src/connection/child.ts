// A pool worker's program started with posix_spawn(3) (system/libc.ts)
// rather than Bun.spawn, and waited for on its pidfd by the worker's own
// blocking poll. A worker has nothing else to do while its program runs, and
// Bun.spawn's machinery (a Subprocess, its promise, Bun's own pidfd in its
// event loop, three fcntl checks of the stdio, the whole environment
// converted again) was a large part of a worker's CPU per connection
// (docs/DESIGN.md, "Measurements behind the code").
// The program gets what Bun.spawn gave it: descriptors 0-2 only, every
// signal at its default (but 32 and 33, glibc's own, which its posix_spawn
// cannot reset when socket itself was started with them ignored) and none
// blocked. Only where the thread may block: no timer runs while it waits (--timeout
// keeps Bun.spawn), and signal handlers run at the wait's EINTR.
import { canSpawn, close, EINTR, isReadable, pidfdOpen, poll, POLLIN, reapPidfd, spawnProgram, StringTable, SysError } from "../system/libc.ts";
import { constants } from "node:os";
import { nextTick } from "../system/signals.ts";

const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name]));
const signalName = (n: number): string => SIGNAL_NAMES.get(n) ?? `signal ${n}`;

/** How a program ended: its exit status, or the signal that killed it ("SIGKILL"). */
export interface Ended {
  code: number | null;
  signal: string | null;
}

/** A program's argv and path as C strings, made once per worker. */
export interface SpawnArgs {
  path: Buffer;
  argv: StringTable;
}

export function spawnArgs(argv: readonly string[], argv0: string): SpawnArgs {
  return { path: Buffer.from(`${argv[0]}\0`), argv: new StringTable([argv0, ...argv.slice(1)]) };
}

/** Whether this machine's libc can start programs this way (glibc 2.34 and later). */
export const childrenSpawnable = canSpawn;

export class Child {
  /** Readable when the program has ended; watched by the worker's Waiter under --prestart. */
  readonly pidfd: number;
  private result: Ended | undefined;

  private constructor(readonly pid: number) {
    try {
      this.pidfd = pidfdOpen(pid);
    } catch (e) {
      process.kill(pid, "SIGKILL"); // not to be left unwatched
      throw e;
    }
  }

  /** Starts the program on these descriptors; `env` a table of the inherited variables, `extra` this start's own. */
  static start(args: SpawnArgs, env: StringTable, extra: readonly string[], stdio: readonly [number, number, number]): Child {
    return new Child(spawnProgram(args.path, args.argv.with(), env.with(extra), stdio));
  }

  get signalCode(): string | null {
    return this.result?.signal ?? null;
  }

  /** Whether it has ended (not yet reaped). */
  hasEnded(): boolean {
    return this.result !== undefined || isReadable(this.pidfd);
  }

  /**
   * Blocks until the program ends (or `timeoutMs` passes: undefined) and
   * reaps it. A signal to the worker ends the poll: its handlers run, and
   * the wait goes on.
   */
  async wait(timeoutMs?: number): Promise<Ended | undefined> {
    if (this.result) return this.result;
    const fds = new Int32Array([this.pidfd, POLLIN]);
    const end = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    for (;;) {
      const left = end === undefined ? -1 : Math.max(0, end - Date.now());
      const ready = poll(fds, 1, left);
      if (ready === -EINTR) {
        await nextTick();
        continue;
      }
      if (ready < 0) throw new SysError("poll", -ready);
      if (ready === 0) return undefined;
      const ended = reapPidfd(this.pidfd);
      if (!ended) continue;
      close(this.pidfd);
      this.result = { code: ended.code, signal: ended.signal === null ? null : signalName(ended.signal) };
      return this.result;
    }
  }

  /** The exit status, 128 + the signal's number when one ended it (as sh reports it). */
  get exited(): Promise<number> {
    return this.wait().then((ended) => ended!.code ?? 128 + (constants.signals[ended!.signal as NodeJS.Signals] ?? 0));
  }

  kill(signal: NodeJS.Signals): void {
    if (this.result) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      // already gone
    }
  }
}
