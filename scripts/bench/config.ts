// The benchmark's knobs, in one place. BENCH_QUICK=1 (or --quick) makes
// every phase short, for trying the script out; its numbers are rough.
import { join } from "node:path";

export const ROOT = join(import.meta.dir, "..", "..");
export const QUICK = process.env.BENCH_QUICK === "1" || process.argv.includes("--quick");
/** Closed-loop seconds per concurrency, run as ROUND_S rounds that rotate through the servers. */
export const ROUNDS = QUICK ? 1 : 5;
export const ROUND_S = 1;
/** Connections one at a time, each server in turn, with a pause after each. */
export const IDLE_COUNT = QUICK ? 50 : 200;
export const IDLE_PAUSE_MS = 10;
export const TRANSFER_MB = QUICK ? 20 : 100;
export const TRANSFER_RUNS = QUICK ? 3 : 5;
export const LAUNCHES = QUICK ? 3 : 5;
/** How long an idle pool is watched for the CPU it spends doing nothing. */
export const IDLE_CPU_S = QUICK ? 2 : 10;
/** How long an idle pool settles before its CPU is measured: JSC's warm-up threads run for seconds after a start. */
export const IDLE_SETTLE_MS = QUICK ? 3000 : 15_000;
export const CONCURRENCY = [1, 8, 64] as const;
/** The launchers' scenario: requests one at a time through nginx, per contender. */
export const LAUNCHER_COUNT = QUICK ? 100 : 500;
export const LAUNCHER_CONCURRENCY = 8;
/** The launchers' small POST (kept in nginx's memory), and the big one sent to the header-first CGI, BODY_COUNT times. */
export const POST_KB = 64;
export const BODY_MB = 5;
export const BODY_COUNT = 20;
export const CORES = navigator.hardwareConcurrency;
export const log = (line: string) => console.error(`bench: ${line}`);

/** The settings above that the report quotes, kept with the results (docs/bench.json). */
export const SETTINGS = {
  rounds: ROUNDS,
  roundS: ROUND_S,
  idleCount: IDLE_COUNT,
  transferMb: TRANSFER_MB,
  transferRuns: TRANSFER_RUNS,
  launches: LAUNCHES,
  idleCpuS: IDLE_CPU_S,
  launcherCount: LAUNCHER_COUNT,
  launcherConcurrency: LAUNCHER_CONCURRENCY,
  /** wrk loads nginx at 8 at a time; without it, our own closed loop does. */
  wrk: Bun.which("wrk") !== null,
};
export type Settings = typeof SETTINGS;
