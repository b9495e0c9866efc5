// --prestart: a worker starts its next program before its connection
// arrives, on pipes, and watches it (a pidfd in the worker's epoll wait)
// while it waits. A program that ends before its connection is reaped at
// once and replaced after the pool's backoff; it is never handed a
// connection. On a connection the pipes are bridged with splice(2), or,
// under -c/-r/-w, joined by the copy loop (the program is then started on
// Bun's own pipes, which that loop reads).
import type { Address } from "../net/address.ts";
import { copyDescriptor, programSide, startForCopy } from "../connection/local.ts";
import type { ServeOptions } from "../options.ts";
import { verbose } from "../system/log.ts";
import { prestartVars, programEnd, startOnPipes, type Program } from "../connection/program.ts";
import { Spawned, type PipedProcess, type Process } from "../connection/process.ts";
import { bridge } from "../connection/splice.ts";
import { close } from "../system/fd.ts";
import { isReadable } from "../system/poll.ts";
import { pidfdOpen } from "../system/process.ts";
import { Backoff } from "./backoff.ts";
import type { Waiter } from "./wait.ts";
import { say } from "../system/log.ts";

import { errorText } from "../fatal.ts";

/** A program waiting for its connection. */
type Waiting =
  | { kind: "spliced"; proc: Process; pidfd: number; input: number; output: number }
  | { kind: "copied"; proc: PipedProcess; pidfd: number };

/** Our ends of a program's pipes, when it will never have a connection. */
function closePipes(waiting: Waiting): void {
  if (waiting.kind === "spliced") {
    close(waiting.input);
    close(waiting.output);
    return;
  }
  const { stdin, stdout, stderr } = waiting.proc;
  try {
    if (stdin && typeof stdin === "object") void Promise.resolve(stdin.end()).catch(() => {});
  } catch {
    // already gone
  }
  for (const stream of [stdout, stderr]) if (stream instanceof ReadableStream) void stream.cancel().catch(() => {});
}

export class Prestart {
  /** The bridge is the connection's only user: it may be non-blocking. */
  readonly nonBlocking = true;
  private waiting: Waiting | undefined;
  private readonly backoff = new Backoff();
  /** The UCSPI variables a prestarted program gets (no remote address yet). */
  private readonly vars: Record<string, string>;
  /** -c, -r and -w look at bytes or switch a direction off: the copy loop does that. */
  private readonly copied: boolean;

  constructor(
    private readonly program: Program,
    address: Address,
    private readonly options: ServeOptions,
    private readonly waiter: Waiter,
  ) {
    this.vars = prestartVars(address);
    this.copied = options.crlf || options.readOnly || options.writeOnly;
  }

  /** The pidfd of the waiting program, for the worker to tell its events apart. */
  get pidfd(): number {
    return this.waiting?.pidfd ?? -1;
  }

  /**
   * Makes sure a program is waiting; false when it could not be started
   * (said on stderr, and the next try is after the backoff).
   */
  async ready(): Promise<boolean> {
    if (this.waiting) return true;
    const delay = this.backoff.delay();
    if (delay > 0) await Bun.sleep(delay); // not in the epoll wait meanwhile: connections go to other workers
    try {
      if (this.copied) {
        const proc = startForCopy(this.options, this.program, this.vars);
        this.waiting = { kind: "copied", proc, pidfd: -1 };
        this.waiting.pidfd = pidfdOpen(proc.pid);
      } else {
        const { proc, input, output } = startOnPipes(this.program, this.vars, -1);
        this.waiting = { kind: "spliced", proc, pidfd: -1, input, output };
        // A posix_spawn'ed one has its pidfd (to wait on later); Bun's own is not ours to watch.
        this.waiting.pidfd = proc instanceof Spawned ? proc.pidfd : pidfdOpen(proc.pid);
      }
      this.waiter.watch(this.waiting.pidfd);
      return true;
    } catch (e) {
      say(`worker ${process.pid}: cannot start the program: ${errorText(e)}`);
      this.discard();
      this.backoff.fail();
      return false;
    }
  }

  /** The waiting program ended before its connection: reap it (no zombie), say why, back off. */
  async ended(): Promise<void> {
    const waiting = this.take();
    if (!waiting) return;
    closePipes(waiting);
    const code = await waiting.proc.exited;
    const how = waiting.proc.signalCode ? `killed by ${waiting.proc.signalCode}` : `exit ${code}`;
    this.backoff.fail();
    say(`worker ${process.pid}: program ${waiting.proc.pid} ended before its connection (${how}); starting another in ${this.backoff.delay()} ms`);
  }

  /** Serves a connection (accepted non-blocking) with the waiting program, then waits for its end. */
  async serve(fd: number): Promise<void> {
    // It may have ended between the wait and the accept: it never gets the connection.
    if (this.waiting && isReadable(this.waiting.pidfd)) await this.ended();
    if (!this.waiting && !(await this.ready())) return close(fd);
    const waiting = this.take();
    if (!waiting) return close(fd);
    this.backoff.reset();
    const say = (line: string) => verbose(this.options, line);
    if (waiting.kind === "copied") {
      await copyDescriptor(fd, this.options, programSide(this.options, waiting.proc, this.program));
      return;
    }
    const { quit, timeoutMs } = this.options;
    await bridge({ conn: fd, input: waiting.input, output: waiting.output }, { quit, timeoutMs, log: say });
    await programEnd(waiting.proc, timeoutMs, say);
  }

  /** The worker ends: a program without a connection has nothing to lose. */
  discard(): void {
    const waiting = this.take();
    if (!waiting) return;
    waiting.proc.kill("SIGKILL");
    closePipes(waiting);
  }

  /** Hands over the waiting program and stops watching it. */
  private take(): Waiting | undefined {
    const waiting = this.waiting;
    this.waiting = undefined;
    if (!waiting) return undefined;
    if (waiting.proc instanceof Spawned) this.waiter.unwatch(waiting.pidfd); // its own wait uses it later
    else if (waiting.pidfd >= 0) close(waiting.pidfd); // also removes it from the epoll set
    return waiting;
  }
}
