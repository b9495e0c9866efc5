// A pool worker's FastCGI request in hand (fastcgi-blocking.ts): its
// program and the descriptors joining it to the connection; and the pool's
// descriptors the connection watches.
import { close } from "../system/fd.ts";
import type { Cgi } from "./cgi-process.ts";
import type { Pipes } from "./fastcgi-output.ts";

/** The request's program and the descriptors joining it to the connection. */
export interface Job {
  id: number;
  proc: Cgi;
  /** The program's pidfd, from its start (before anything can reap it): its exit ends the output. Ours to close only when we opened it. */
  pidfd: number | undefined;
  ownPidfd: boolean;
  /** Our end of the program's stdin pipe, non-blocking; undefined once closed (EOF to it). */
  stdin: number | undefined;
  /** The body has ended: the output, held in the pipes until then, is spliced. */
  bodyEnded: boolean;
  /** The program waits to write (its output is held): the body is taken in (to disk) rather than paused. */
  stalled: boolean;
  /** Read ends of the program's stdout and stderr, until the output is spliced. */
  pipes: Pipes | undefined;
}

/** Its pidfd closed, when it is ours. */
export function closePidfd(job: Job): void {
  if (job.pidfd !== undefined && job.ownPidfd) close(job.pidfd);
  job.pidfd = undefined;
}

/** What the master said: drain (RETIRE, or its end), leave (a retirement: the service goes on), reopen the log, or nothing yet. */
export type MasterWord = "drain" | "leave" | "reopen" | "nothing";

/** The pool's descriptors a FastCGI connection watches. */
export interface WorkerFds {
  /** The listener: a kept connection gives way when another connection waits there (fastcgi-engine.ts keptVerdict). */
  listener: number;
  /** The master's control socket: a byte (retire, leave, reopen) or its end. */
  control: number;
  /** Reads the master's word there and has the worker act on it (a drain or a leave reaches this connection too). */
  hear(): MasterWord;
}
