// A pool must survive a process limit (ulimit -u, a container's pids.max):
// the kernel counts threads against it, and JavaScriptCore starts helper
// threads lazily (a GC marker, the concurrent JIT and collector). When one
// cannot be created (pthread_create: EAGAIN) Bun aborts the process: a
// master that started the workers which used the limit up then died with
// "panic: abort() called" (exit 134) in about half the runs under
// `ulimit -u 25`. With these options no thread is created after start
// (measured: a master's or worker's threads stay main, JSCWarmUp and
// mi-scavenger); what fails then is a spawn, with EAGAIN, which the pool
// reports and retries after its backoff. A pool's processes hold tiny heaps,
// so collecting on the main thread costs nothing measurable.
//
// JavaScriptCore reads them at start only, so the master sets them by
// executing itself again, once (the same pid: a service manager sees no
// change), and hands them to its workers. Programs never see them.
import { exec } from "./libc.ts";
import { selfCommand } from "./self.ts";

export const NO_LAZY_THREADS: Readonly<Record<string, string>> = {
  BUN_JSC_useConcurrentJIT: "0",
  BUN_JSC_useConcurrentGC: "0",
  BUN_JSC_numberOfGCMarkers: "1",
};

function running(): boolean {
  return Object.entries(NO_LAZY_THREADS).every(([name, value]) => process.env[name] === value);
}

/**
 * Makes sure this process runs with NO_LAZY_THREADS (executing itself again
 * with `argv` if not), then takes them out of the environment programs get.
 */
export function withoutLazyThreads(argv: string[]): void {
  if (!running()) {
    const [path, ...self] = selfCommand();
    try {
      exec(path, [path, ...self, ...argv], { ...(process.env as Record<string, string>), ...NO_LAZY_THREADS });
    } catch {
      return; // cannot execute ourselves (the file is gone): serve as we are
    }
  }
  for (const name of Object.keys(NO_LAZY_THREADS)) delete process.env[name];
}
