// What a pool's master and its workers say to each other, in one place, so
// that each side can be read without the other: the worker's configuration
// (built by the master, checked by the worker), the descriptors a worker is
// started with, the messages both ways and the workers' exit statuses.
import { Fatal } from "../fatal.ts";
import type { Address } from "../net/address.ts";
import type { Options } from "../options.ts";

/** Everything a worker is told by its master (JSON in the SOCKET_WORKER environment variable). */
export interface WorkerConfig {
  /**
   * The master's options, as its command line was parsed and checked
   * (Options is plain data): a worker does not load the parser. Its
   * node:util (parseArgs) would make every idle worker's own heap larger.
   */
  options: Options;
  /** The address the master bound (port 0 resolved) or was passed. */
  address: Address;
  masterPid: number;
  /** -b --log FILE as an absolute path: what SIGUSR1 makes the worker reopen onto its stdout and stderr. */
  logFile?: string;
  /**
   * Socket's own stderr, as this descriptor: until the worker waits for
   * connections its fd 2 is a pipe the master reads (STDERR_FD).
   */
  stderrFd?: number;
  /** Under a process limit: start the runtime's helper threads before waiting (system/threads.ts startThreadsNow). */
  threadsAtStart?: boolean;
}

/** A worker's configuration read and checked: the options it serves with, and its master's facts. */
export interface WorkerSetup {
  options: Options;
  address: Address;
  masterPid: number;
  logFile: string | undefined;
  stderrFd: number | undefined;
  threadsAtStart: boolean | undefined;
}

export const WORKER_ENV = "SOCKET_WORKER";
export const WORKER_FLAG = "--pool-worker";
/** The worker's descriptors, as the master's spawn places them. */
export const LISTEN_FD = 3;
export const CONTROL_FD = 4;
/**
 * Socket's own stderr in a starting worker, whose fd 2 is a pipe to the
 * master: what a worker says before it waits (Bun's crash report when it
 * cannot create a thread under a process limit) is the master's to
 * condense into its one line. Once it waits, the worker puts this on fd 2.
 */
export const STDERR_FD = 5;

/**
 * Master to worker, one byte on the control socket: finish the connection
 * in hand (if any), serve what already waits in the listener's queue, and
 * exit. End of file on it means the master is gone.
 */
export const RETIRE = 0x72;
/**
 * Master to worker: finish the connection in hand (if any) and exit, leaving
 * the queue to the other workers (HUP's and USR2's replaced workers, TTOU).
 */
export const LEAVE = 0x6c;
/**
 * Master to worker: -b's --log was reopened (USR1); open it again too. A
 * byte rather than the signal passed on: a signal that lands while the
 * worker is between its event loop and its blocking wait is handled only
 * at the next wake-up, and an idle worker may not wake for hours.
 */
export const REOPEN = 0x6f;

/** --max-per-source: a worker asks before serving, the master answers (admission.ts). */
export type AdmitRequest = { admit: string };
export type AdmitVerdict = { admitted: boolean };
/** --slow: the request a gateway worker serves (method and URI), for the master's slow line. */
export type RequestNote = { request: string };
/**
 * Worker to master, over Bun's IPC channel (sent at once, even when the
 * worker then blocks). "failed": a program could not start or exited
 * 126/127; "refused": --allow/--deny closed a connection; "overdue":
 * --request-timeout or --send-timeout ended a request (all three --status only).
 */
export type WorkerMessage = "busy" | "idle" | "failed" | "refused" | "overdue" | AdmitRequest | RequestNote;

export function isRequestNote(message: unknown): message is RequestNote {
  return typeof message === "object" && message !== null && "request" in message && typeof message.request === "string";
}

export function isAdmitRequest(message: unknown): message is AdmitRequest {
  return typeof message === "object" && message !== null && "admit" in message;
}

export function isVerdict(message: unknown): message is AdmitVerdict {
  return typeof message === "object" && message !== null && "admitted" in message;
}

/** Exit status of a worker that reached its --max-requests. */
export const EXIT_MAX_REQUESTS = 0;
/** Exit status of a worker that was retired (and drained the queue). */
export const EXIT_RETIRED = 3;
/** Exit status of a worker whose listener failed (accept: neither a connection nor EAGAIN): the master backs off. */
export const EXIT_LISTENER_FAILED = 4;
/**
 * Exit status of a worker that could not set itself up, for a reason that
 * would stop the next one too (not a shortage: see transientErrno). Before
 * the pool first serves, the master gives up on it (start-failures.ts).
 */
export const EXIT_START_FAILED = 5;

/**
 * Errors of a start (posix_spawn, or a worker's own setup) that pass by
 * themselves: a process or memory limit, descriptors, a busy executable.
 * Any other (EACCES, ENOENT, ENOEXEC, E2BIG...) recurs at every try.
 */
const TRANSIENT_ERRNOS = new Set([
  4, // EINTR
  11, // EAGAIN: a process limit (RLIMIT_NPROC, pids.max)
  12, // ENOMEM
  16, // EBUSY
  23, // ENFILE
  24, // EMFILE
  26, // ETXTBSY: the executable is being written (an upgrade)
  105, // ENOBUFS
]);

/** Whether an errno (Bun's are negative) names a shortage that passes, not a lasting fault. */
export function transientErrno(errno: number): boolean {
  return TRANSIENT_ERRNOS.has(Math.abs(errno));
}

/**
 * Whether workers say busy and idle: only a dynamic pool, -v,
 * --max-per-source, --status or --slow needs to know, and each message
 * costs the master a wakeup. A worker's first "idle" (ready) is said always.
 */
export function reportsState(options: Options): boolean {
  return options.pool !== undefined && (options.pool.max > options.pool.min || options.verbose || options.maxPerSource !== undefined ||
    options.status !== undefined || options.slowMs !== undefined);
}

/** Whether workers tell the master of failed programs, refused connections and requests ended: only --status counts them. */
export function reportsEvents(options: Options): boolean {
  return options.status !== undefined;
}

/**
 * The kernel takes at most 128 KiB per environment string (MAX_ARG_STRLEN):
 * a -p command near socket's own argument limit, escaped in JSON, is more.
 * The configuration is split into variables of this many bytes.
 */
const PART_BYTES = 64 << 10;

/** The worker's configuration as environment variables: SOCKET_WORKER, then SOCKET_WORKER_1, _2... while it lasts. */
export function workerConfig(options: Options, address: Address, logFile: string | undefined, holdsStderr: boolean, threadsAtStart: boolean): Record<string, string> {
  const config: WorkerConfig = { options, address, masterPid: process.pid, logFile, stderrFd: holdsStderr ? STDERR_FD : undefined, threadsAtStart };
  // ASCII only (\u escapes), so that a part's characters are its bytes and no character is cut in two.
  const text = JSON.stringify(config).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  const env: Record<string, string> = {};
  for (let i = 0; i * PART_BYTES < text.length; i++) env[i === 0 ? WORKER_ENV : `${WORKER_ENV}_${i}`] = text.slice(i * PART_BYTES, (i + 1) * PART_BYTES);
  return env;
}

/**
 * The worker's side: the configuration's parts joined, and taken out of the
 * environment (programs must not see them; a master's workers must not
 * inherit stale parts). Undefined without a first part.
 */
export function takeWorkerConfig(env: Record<string, string | undefined>): string | undefined {
  let text = env[WORKER_ENV];
  delete env[WORKER_ENV];
  for (let i = 1; env[`${WORKER_ENV}_${i}`] !== undefined; i++) {
    if (text !== undefined) text += env[`${WORKER_ENV}_${i}`];
    delete env[`${WORKER_ENV}_${i}`];
  }
  return text;
}

function isAddress(a: unknown): a is Address {
  if (typeof a !== "object" || a === null || !("kind" in a)) return false;
  if (a.kind === "unix") return "path" in a && typeof a.path === "string";
  if (a.kind !== "inet" || !("ip" in a && "family" in a && "port" in a)) return false;
  return typeof a.ip === "string" && (a.family === 4 || a.family === 6) && Number.isInteger(a.port);
}

/** Options as a pool's: the master checked them all, a worker only makes sure they have a pool. */
function isPoolOptions(o: unknown): o is Options {
  return typeof o === "object" && o !== null && "pool" in o && typeof o.pool === "object" && o.pool !== null;
}

/** The worker's side: a malformed configuration is one line and a failed worker, not a TypeError. */
export function readWorkerConfig(text: string): WorkerSetup {
  const malformed = (why: string) => new Fatal(`worker: malformed configuration from the master (${why})`, 1);
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch {
    throw malformed("not JSON");
  }
  if (typeof config !== "object" || config === null) throw malformed("not an object");
  const { options, address, masterPid, logFile, stderrFd, threadsAtStart }: Partial<Record<keyof WorkerConfig, unknown>> = config;
  if (!isPoolOptions(options)) throw malformed("options");
  if (!isAddress(address)) throw malformed("address");
  if (typeof masterPid !== "number" || !Number.isInteger(masterPid)) throw malformed("masterPid");
  if (logFile !== undefined && typeof logFile !== "string") throw malformed("logFile");
  if (stderrFd !== undefined && (typeof stderrFd !== "number" || !Number.isInteger(stderrFd))) throw malformed("stderrFd");
  if (threadsAtStart !== undefined && typeof threadsAtStart !== "boolean") throw malformed("threadsAtStart");
  return { options, address, masterPid, logFile, stderrFd, threadsAtStart };
}
