// A pool must survive a process limit (ulimit -u, a container's pids.max):
// the kernel counts threads against it, and JavaScriptCore starts helper
// threads lazily (a GC marker, the concurrent JIT and collector). When one
// cannot be created (pthread_create: EAGAIN) Bun aborts the process: a
// master that started the workers which used the limit up then died with
// "panic: abort() called" (exit 134) in about half the runs under
// `ulimit -u 25`. With these options no thread is created after start
// (measured: a master's threads stay main, JSCWarmUp and mi-scavenger; a
// worker starts the same at once, startThreadsNow); what fails then is a spawn, with EAGAIN, which the pool
// reports and retries after its backoff. A pool's processes hold tiny heaps,
// so collecting on the main thread costs nothing measurable.
//
// JavaScriptCore reads them at start only. Workers get them in the
// environment they are started with. The master would have to execute
// itself again (the same pid: a service manager sees no change), which
// costs a whole start of the executable (a large part of launching a small
// pool): it does so only where a limit can be reached, that is when
// RLIMIT_NPROC binds it (it is not root, or it becomes -u's user) or a
// cgroup above it has a pids.max. Programs never see the options.
import { fs } from "./builtins.ts";
import { exec, processLimitSet } from "./process.ts";
import { geteuid } from "./users.ts";
import { selfCommand } from "./self.ts";

import { errorCode } from "../fatal.ts";

export const NO_LAZY_THREADS: Readonly<Record<string, string>> = {
  BUN_JSC_useConcurrentJIT: "0",
  BUN_JSC_useConcurrentGC: "0",
  BUN_JSC_numberOfGCMarkers: "1",
};

/** Whether a process limit can be reached here: this process runs with NO_LAZY_THREADS, and for a reason. */
let limited = false;

function running(): boolean {
  return Object.entries(NO_LAZY_THREADS).every(([name, value]) => process.env[name] === value);
}

/** A number in a pids.max of this process's cgroup or one above it (v1's pids hierarchy, or v2's). */
function pidsLimited(): boolean {
  let lines: string[];
  try {
    lines = fs().readFileSync("/proc/self/cgroup", "utf8").split("\n");
  } catch {
    return true; // cannot tell: assume a limit
  }
  for (const line of lines) {
    const [, controllers, path] = line.split(":");
    if (path === undefined) continue;
    const root = controllers === "" ? "/sys/fs/cgroup" : controllers!.split(",").includes("pids") ? "/sys/fs/cgroup/pids" : undefined;
    if (root === undefined) continue;
    for (let dir = path; ; dir = dir.slice(0, dir.lastIndexOf("/")) || "/") {
      let max: string;
      try {
        max = fs().readFileSync(`${root}${dir === "/" ? "" : dir}/pids.max`, "utf8").trim();
      } catch (e) {
        // The top cgroup has no pids.max; a hierarchy not mounted here cannot be read: assume a limit.
        if (dir === "/" && errorCode(e) === "ENOENT") break;
        return true;
      }
      if (max !== "max") return true;
      if (dir === "/") break;
    }
  }
  return false;
}

/** Root of the first user namespace: root of a container's own namespace is held to RLIMIT_NPROC as its outside user is. */
function initialRoot(): boolean {
  if (geteuid() !== 0) return false;
  try {
    return fs().readFileSync("/proc/self/uid_map", "utf8").trim().split(/\s+/).join(" ") === "0 0 4294967295";
  } catch {
    return false;
  }
}

/** Whether creating a thread can fail for a limit (`dropsPrivileges`: -u/-g, whose user RLIMIT_NPROC binds). */
function limitReachable(dropsPrivileges: boolean): boolean {
  return ((dropsPrivileges || !initialRoot()) && processLimitSet()) || pidsLimited();
}

/**
 * Makes sure this process runs with NO_LAZY_THREADS where a limit can be
 * reached (executing itself again with `argv` if not), then takes them out
 * of the environment programs get.
 */
export function withoutLazyThreads(argv: string[], dropsPrivileges: boolean): void {
  if (!running() && limitReachable(dropsPrivileges)) {
    const [path, ...self] = selfCommand();
    try {
      exec(path, [path, ...self, ...argv], { ...(process.env as Record<string, string>), ...NO_LAZY_THREADS });
    } catch {
      return; // cannot execute ourselves (the file is gone): serve as we are
    }
  }
  // A USR2 successor is started with the options whether a limit binds or not (succession.ts): asked again.
  limited = running() && limitReachable(dropsPrivileges);
  for (const name of Object.keys(NO_LAZY_THREADS)) delete process.env[name];
}

/** Whether a process limit can be reached here (withoutLazyThreads found or made it so): its workers start their threads at once. */
export const underProcessLimit = (): boolean => limited;

/**
 * The runtime's helper threads that a first use would start, started now,
 * while a worker starts: under a process limit a thread that cannot be
 * made aborts the process (Bun's crash), and at start that is a start's
 * failure, which the master retries at its backoff's pace, where later it
 * would end a connection in the middle. Loading node:fs starts them
 * (JavaScriptCore's JSCWarmUp and mimalloc's scavenger); with no built-in
 * loaded at start, a worker's first connections would.
 */
export function startThreadsNow(): void {
  fs().realpathSync("/");
}
