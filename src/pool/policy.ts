// What the pool's policy (-W MIN:MAX, --ramp, --idle-timeout) decides from
// the workers' states alone: how many to start, which one goes. The master
// (master.ts) acts on it; nothing here starts or signals a process.
import type { PoolPolicy } from "../options.ts";
import { EXIT_MAX_REQUESTS, EXIT_RETIRED, EXIT_START_FAILED } from "./protocol.ts";
import type { WorkerRecord } from "./worker-process.ts";

/** A worker that dies sooner than this after starting, having served nothing, is failing. */
const QUICK_DEATH_MS = 1000;
/** Workers started at once while the pool fills: the cores this process may use. */
export const STARTS_AT_ONCE = Math.max(1, navigator.hardwareConcurrency);

/** The current generation's workers, not retiring, counted by state. */
export interface PoolCounts {
  active: number;
  starting: number;
  idle: number;
}

/** How many workers to start now: up to MIN, and a spare (or, with --ramp burst, up to MAX) when none is ready. */
export function startsWanted({ min, max, ramp }: PoolPolicy, { active, starting, idle }: PoolCounts): number {
  // At most as many start at once as there are cores: each start is a
  // whole executable's, and a large pool started at once on few cores
  // made the first wait for nearly all of them. The rest follow as each
  // says it waits (the master balances again).
  const toMin = Math.max(0, Math.min(min - active, STARTS_AT_ONCE - starting));
  const nowActive = active + toMin;
  if (idle + starting + toMin > 0 || nowActive >= max) return toMin;
  return toMin + (ramp === "burst" ? max - nowActive : 1);
}

/** One worker idle longer than --idle-timeout, while the pool is above MIN: it retires. */
export function idleTooLong<W extends Pick<WorkerRecord, "state" | "idleSince">>(current: W[], policy: PoolPolicy, now: number): W | undefined {
  if (current.length <= policy.min) return undefined;
  return current.find((w) => w.state === "idle" && now - w.idleSince >= policy.idleTimeoutMs);
}

/**
 * TTOU's worker to go: an idle one if the pool knows (a fixed pool's
 * workers do not report their state), else one still starting, else any.
 */
export function oneToRemove<W extends Pick<WorkerRecord, "state">>(current: W[], statesKnown: boolean): W {
  return current.find((w) => w.state === "idle" && statesKnown) ?? current.find((w) => w.state === "starting") ?? current[0];
}

/** How a worker's end counts: by policy (no failure), a failed set-up, or a death at start. */
export function exitKind(
  worker: Pick<WorkerRecord, "state" | "retiring" | "served" | "startedAt">,
  code: number | null,
  now: number,
): { setUpFailed: boolean; failedAtOnce: boolean } {
  const byPolicy = code === EXIT_MAX_REQUESTS || code === EXIT_RETIRED || worker.retiring;
  const setUpFailed = code === EXIT_START_FAILED && worker.state === "starting";
  const failedAtOnce = !byPolicy && worker.served === 0 && (setUpFailed || now - worker.startedAt < QUICK_DEATH_MS);
  return { setUpFailed, failedAtOnce };
}
