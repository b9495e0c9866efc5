// Processes: this one's parent and its limits, children reaped or looked at
// (waitpid, waitid, pidfds), orphans adopted (subreaper), and exec. How
// each call reports failure: ffi.ts.
import { ptr as pointerTo } from "bun:ffi";
import { check, errno, lib, SysError } from "./ffi.ts";

const PR_SET_PDEATHSIG = 1;
const PR_SET_CHILD_SUBREAPER = 36;
const RLIMIT_NPROC = 6;
const WNOHANG = 1;
const WEXITED = 4;
const WNOWAIT = 0x01000000;
const P_ALL = 0;
const P_PIDFD = 3;
const CLD_EXITED = 1;

const SIG_BLOCK = 0;
const SIG_UNBLOCK = 1;
const SIG_SETMASK = 2;
/** sigset_t is 1024 bits in glibc; SIGCHLD (17) is bit 16 of its first word. */
const childSet = () => new BigUint64Array([1n << 16n, ...new Array<bigint>(15).fill(0n)]);

/**
 * Runs `start` with SIGCHLD blocked (or unblocked) on this thread, then
 * puts the mask back. Bun.spawn gives a process its caller's mask: the
 * master starts each worker with SIGCHLD blocked, so every thread that
 * worker's runtime starts has it blocked too; a worker unblocks it around
 * Bun.spawn, as its programs must not inherit it (pool/worker-process.ts,
 * connection/bun-process.ts). Best effort.
 */
export function withChildSignal<T>(blocked: boolean, start: () => T): T {
  const before = new BigUint64Array(16);
  lib().pthread_sigmask(blocked ? SIG_BLOCK : SIG_UNBLOCK, childSet(), before);
  try {
    return start();
  } finally {
    lib().pthread_sigmask(SIG_SETMASK, before, null);
  }
}

export function getppid(): number {
  return lib().getppid();
}

/** SIGKILL's number, the same on every Linux architecture (no node:os to load for it). */
const SIGKILL = 9;

/** The kernel sends SIGKILL to this process when its parent ends, however it ends. */
export function dieWithParent(): void {
  check("prctl", lib().prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
}

/**
 * Orphans of our descendants become our children instead of init's, so we
 * can reap them and, at shutdown, find them (PR_SET_CHILD_SUBREAPER).
 */
export function becomeSubreaper(on = true): void {
  check("prctl", lib().prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0));
}

/** Whether the soft limit on this user's processes and threads (RLIMIT_NPROC) is set. */
export function processLimitSet(): boolean {
  const limit = new BigUint64Array(2);
  check("getrlimit", lib().getrlimit(RLIMIT_NPROC, limit));
  return limit[0] !== 0xffffffffffffffffn; // RLIM_INFINITY
}

/** A descriptor that becomes readable when process `pid` ends (close-on-exec). */
export function pidfdOpen(pid: number): number {
  return check("pidfd_open", lib().pidfd_open(pid, 0));
}

/**
 * Reaps the ended child of `pidfd` (waitid P_PIDFD: no other child is
 * touched): its exit status, or the number of the signal that ended it.
 * Undefined when it has not ended yet.
 */
export function reapPidfd(pidfd: number): { code: number | null; signal: number | null } | undefined {
  const info = new Int32Array(32); // siginfo_t: si_pid at byte 16, si_code at 8, si_status at 24
  check("waitid", lib().waitid(P_PIDFD, pidfd, info, WEXITED | WNOHANG));
  if (info[4] === 0) return undefined;
  return info[2] === CLD_EXITED ? { code: info[6], signal: null } : { code: null, signal: info[6] };
}

/** Reaps this one child if it has ended; true if it was reaped. Never waits. */
export function reap(pid: number): boolean {
  return lib().waitpid(pid, new Int32Array(1), WNOHANG) === pid;
}

/**
 * The pid of some child that has ended and is not yet reaped, without
 * reaping it (waitid with WNOWAIT); 0 when there is none.
 */
export function peekEndedChild(): number {
  const info = new Int32Array(32); // siginfo_t is 128 bytes; si_pid is at byte 16 on 64-bit Linux
  if (lib().waitid(P_ALL, 0, info, WEXITED | WNOHANG | WNOWAIT) < 0) return 0; // ECHILD: no children at all
  return info[4];
}

/** A NULL-terminated array of C strings; `keep` holds the strings alive for the call. */
function cStrings(strings: (string | Uint8Array)[], keep: Buffer[]): BigUint64Array {
  const table = new BigUint64Array(strings.length + 1);
  strings.forEach((s, i) => {
    const bytes = typeof s === "string" ? Buffer.from(`${s}\0`) : Buffer.concat([s, Buffer.from([0])]);
    keep.push(bytes);
    table[i] = BigInt(pointerTo(bytes));
  });
  return table;
}

/**
 * Replaces this process with `argv` (same pid, same descriptors but the
 * close-on-exec ones): what a service manager tracks stays the same. Only
 * returns by throwing.
 */
export function exec(path: string, argv: string[], env: Record<string, string | Uint8Array>): never {
  const keep: Buffer[] = [];
  const file = Buffer.from(`${path}\0`);
  const args = cStrings(argv, keep);
  // A value given as bytes goes as they are (a request's bytes that are not UTF-8: request/cgi.ts).
  const envp = cStrings(
    Object.entries(env).map(([k, v]) => (typeof v === "string" ? `${k}=${v}` : Buffer.concat([Buffer.from(`${k}=`), v]))),
    keep,
  );
  lib().execve(file, args, envp);
  throw new SysError("execve", errno());
}

/** A signal to one process, or to its group: false when there is none to signal. */
export function signal(pid: number, group: boolean, name: NodeJS.Signals): boolean {
  try {
    process.kill(group ? -pid : pid, name);
    return true;
  } catch {
    return false;
  }
}
