// A pool worker as the master starts it and keeps track of it: the spawn
// (the same executable, with the listener and a control socket as its
// descriptors 3 and 4) and the words for how it ended.
import type { Subprocess } from "bun";
import { socketPair } from "../system/connect.ts";
import { close } from "../system/fd.ts";
import { withChildSignal } from "../system/process.ts";
import { spawn } from "../system/reaper.ts";
import { imageCommand } from "../system/self.ts";
import { StartOutput } from "./start-failures.ts";
import { EXIT_LISTENER_FAILED, EXIT_MAX_REQUESTS, EXIT_RETIRED, EXIT_START_FAILED, WORKER_FLAG, type WorkerMessage } from "./protocol.ts";

/** A worker as the master keeps track of it. */
export interface WorkerRecord {
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

/** What every worker of a pool is started with, and where what it says goes. */
export interface WorkerLaunch {
  /** What `ps` shows for a worker: which pool it belongs to. */
  title: string;
  listenFd: number;
  /** Socket's stderr is open: a starting worker's goes to a pipe, and this is passed as its STDERR_FD. */
  holdsStderr: boolean;
  env: Record<string, string | undefined>;
  onMessage(pid: number, message: WorkerMessage): void;
  onExit(pid: number, code: number | null, signal: NodeJS.Signals | number | null): void;
}

/**
 * What a worker executes: this master's own image (system/self.ts), not
 * the file at its path. An upgrade may have put a new version there: its
 * workers would speak another version's protocol to this master.
 */
const workerCommand = imageCommand;

/** Starts one worker of `generation`; throws what spawning threw (fork's EAGAIN, a socketpair's EMFILE...). */
export function startWorkerProcess(launch: WorkerLaunch, generation: number): WorkerRecord {
  // A socket pair, not a pipe: a retire byte sent to a worker that has
  // just died must give EPIPE (MSG_NOSIGNAL), not a SIGPIPE that ends the master.
  const [control, workerEnd] = socketPair();
  let proc: Subprocess;
  try {
    // argv0 renames the worker for ps. The executable is this master's own image (workerCommand).
    // Born with SIGCHLD blocked, on every thread it will have (they inherit the mask): it learns of its
    // programs' ends through their pidfds. Unblocked, a CGI that exits before its worker's thread is back
    // from posix_spawn (which blocks every signal until then) woke a thread of Bun's only to drop it.
    proc = withChildSignal(true, () => spawn([...workerCommand(), WORKER_FLAG], {
      argv0: launch.title,
      // Index = the worker's descriptor number: LISTEN_FD 3, CONTROL_FD 4, STDERR_FD 5 (fd 2 a pipe until it waits).
      stdio: launch.holdsStderr ? ["ignore", "inherit", "pipe", launch.listenFd, workerEnd, 2] : ["ignore", "inherit", "inherit", launch.listenFd, workerEnd],
      env: launch.env,
      serialization: "json",
      ipc: (message: WorkerMessage) => launch.onMessage(proc.pid, message),
      onExit: (_p, code, signal) => launch.onExit(proc.pid, code, signal),
    }));
  } catch (e) {
    close(control);
    throw e;
  } finally {
    close(workerEnd); // the worker has its copy; ours would hide the master's death from it
  }
  const now = Date.now();
  const output = new StartOutput(proc.stderr instanceof ReadableStream ? proc.stderr : undefined);
  return { proc, control, state: "starting", startedAt: now, idleSince: now, retiring: false, served: 0, generation, output };
}

/** How a worker ended, in the words of -v's line and of the master's failure lines. */
export function endReason(code: number | null, signal: NodeJS.Signals | number | null): string {
  if (signal) return `killed by ${signal}`;
  switch (code) {
    case EXIT_MAX_REQUESTS:
      return "served its --max-requests";
    case EXIT_RETIRED:
      return "retired";
    case EXIT_LISTENER_FAILED:
      return "could not accept";
    case EXIT_START_FAILED:
      return "could not set itself up";
    default:
      return `failed (exit ${code})`;
  }
}
