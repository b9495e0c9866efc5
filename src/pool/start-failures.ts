// Why a pool worker did not start, in socket's one line. Until a worker
// waits for connections its stderr is a pipe the master reads (protocol.ts
// STDERR_FD): a worker that dies at start under a process limit leaves
// Bun's crash report there (a screenful inviting a bug report, once per
// try), which the master drops; a worker that could not set itself up
// leaves its reason, which the master puts into its own line. Once the
// worker waits, what it said meanwhile goes to socket's stderr as it was,
// without a crash report, and the worker writes there itself from then on.
import { strerror, SysError } from "../system/ffi.ts";
import { write } from "../system/log.ts";
import { transientErrno } from "./protocol.ts";
import { fs } from "../system/builtins.ts";

/**
 * Failures in a row that cannot pass by themselves (protocol.ts
 * transientErrno), before the pool first serves, after which socket gives
 * up: the second and third tries cover an executable caught being replaced.
 */
export const PERMANENT_TRIES = 3;

/** A start that failed: the words of the operator's line, and whether trying again can help. */
export interface StartFailure {
  why: string;
  permanent: boolean;
}

/**
 * Spawning a worker failed. Bun's message names argv0 (the worker's ps
 * title): the line names the executable instead, as execve failed on it.
 */
export function spawnFailure(e: unknown, executable: string): StartFailure {
  if (e instanceof SysError) return { why: e.message, permanent: !transientErrno(e.errno) }; // before the spawn: socketpair
  const errno = typeof e === "object" && e !== null && "errno" in e && typeof e.errno === "number" ? e.errno : undefined;
  if (errno === undefined) return { why: e instanceof Error ? e.message : String(e), permanent: false };
  return { why: `${executable}: ${strerror(Math.abs(errno))}`, permanent: !transientErrno(errno) };
}

/** Whether fd 2 is open (a worker is given it as its STDERR_FD: a closed one would fail every spawn). */
export function stderrOpen(): boolean {
  try {
    fs().fstatSync(2);
    return true;
  } catch {
    return false;
  }
}

const REPORT_RULE = "=".repeat(60);

/**
 * `text` without Bun's crash reports (from the rule of 60 "=", or a second
 * thread's "oh no: ...", to the bun.report link) and without empty lines:
 * socket's own lines are never empty.
 */
export function withoutCrashReport(text: string): string {
  const kept: string[] = [];
  let inReport = false;
  for (const line of text.split("\n")) {
    if (line === REPORT_RULE || line.startsWith("oh no: ")) inReport = true;
    else if (inReport) inReport = !line.includes("bun.report/");
    else if (line !== "") kept.push(line);
  }
  return kept.map((line) => `${line}\n`).join("");
}

/** What a starting worker says is kept to this many characters (its last ones): a reason is one line. */
const HELD_CHARS = 16 << 10;
/** A worker that has exited: how long its stderr may take to reach its end (a process it started could hold it). */
const END_MS = 1000;

/** A starting worker's stderr, read by the master until its end. */
export class StartOutput {
  private held = "";
  private passing = false;
  private readonly done: Promise<void>;
  /** Read to its end (or waited for long enough) after the worker exited. */
  settled = false;

  constructor(stream: ReadableStream<Uint8Array> | undefined) {
    this.done = stream ? this.read(stream) : Promise.resolve();
  }

  private async read(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of stream) this.take(decoder.decode(chunk, { stream: true }));
    } catch {
      // the pipe broke: what was read is what there is
    }
    this.take(decoder.decode());
  }

  private take(text: string): void {
    if (text === "") return;
    if (this.passing) return write(text);
    this.held = (this.held + text).slice(-HELD_CHARS);
  }

  /** The worker waits for connections: what it said so far goes to socket's stderr, without a crash report, and the rest as it comes. */
  pass(): void {
    if (this.passing) return;
    this.passing = true;
    const text = withoutCrashReport(this.held);
    this.held = "";
    if (text !== "") write(text);
  }

  /** Resolves once the stream has ended, or after END_MS (then `settled`). */
  async ended(): Promise<void> {
    await Promise.race([this.done, Bun.sleep(END_MS)]);
    this.settled = true;
  }

  /** The worker's reason, for the master's line: its last line of its own, without "socket: ". */
  words(): string | undefined {
    const lines = withoutCrashReport(this.held).split("\n").filter((line) => line !== "");
    return lines.at(-1)?.replace(/^socket: (worker: )?/, "");
  }
}
