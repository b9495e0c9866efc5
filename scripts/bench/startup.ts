// Start-up and memory against the previous release's build (issue 18), both
// measured in this run: `socket -version`, launch to the first answer of
// `-W 4`, a respawn storm (`--max-requests 1`, 8 clients at a time) and idle
// PSS per worker at -W 4 and -W 64. The previous build is commit
// PREVIOUS_COMMIT (before --bytecode), built from git by builds.ts, or taken
// from BENCH_PREVIOUS=/path/to/socket. Beside them, the floor of any Bun
// executable's start: a one-line Bun program compiled as socket is, timed
// with `socket -version` and with a worker's start (`--pool-worker` with a
// malformed configuration: the executable's start, then the worker's module
// loaded, then one line and exit 1 at the configuration's check).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { WORKER_ENV, WORKER_FLAG } from "../../src/pool/protocol.ts";
import { buildOf, bunFloor, BUN_FLOOR_SOURCE } from "./builds.ts";
import { LAUNCHES, QUICK, ROUND_S, ROUNDS, log } from "./config.ts";
import { closedLoop, median, summarize, type Summary } from "./loadgen.ts";
import { accounted, idlePool, rotate, type IdlePool } from "./measure.ts";
import { start, stop, type Bench, type Contender, type Server } from "./scenarios.ts";

/** The previous release's commit: the last build without --bytecode. */
export const PREVIOUS_COMMIT = "2d98ff1";
export const THIS_BUILD = "this build";
export const PREVIOUS_BUILD = `previous (${PREVIOUS_COMMIT})`;

const VERSION_RUNS = 40;
/** Launches per build: more than the launch table's, the ratio is a target. */
const STARTUP_LAUNCHES = Math.max(LAUNCHES, QUICK ? 4 : 10);
export const IDLE_WORKERS = [4, 64] as const;

export interface StartupBuild {
  name: string;
  /** `socket -version`, mean ms. */
  versionMs: number;
  versionHow: string;
  /** Launch to the first answered connection of -W 4, ms, sorted. */
  launchMs: number[];
  /** `-W 4 --max-requests 1` at 8 at a time. */
  storm: Summary;
  /** Idle pools by worker count. */
  idle: Record<number, IdlePool>;
}

export interface StartupResult {
  builds?: StartupBuild[];
  /** The one-line Bun program (BUN_FLOOR_SOURCE) compiled as socket is: mean ms per run, timed as versionMs. */
  bunFloorMs?: number;
  /** This build's worker start (`--pool-worker`, SOCKET_WORKER="{}"), mean ms, timed as versionMs. */
  workerStartMs?: number;
  /** Why the floor was not measured. */
  floorNote?: string;
  /** Why the comparison did not run (the previous build could not be built). */
  note?: string;
}

/** A command timed by startTimes. */
interface Start {
  argv: string[];
}

/**
 * Mean ms of each command's run, hyperfine -N when installed (-i: the
 * worker's start fails on purpose). SOCKET_WORKER is set for all of them:
 * only `--pool-worker` reads it.
 */
function startTimes(b: Bench, commands: Start[]): { ms: number[]; how: string } {
  const env = { ...process.env, [WORKER_ENV]: "{}" };
  if (Bun.which("hyperfine")) {
    const json = join(b.scratch, "version.json");
    const argv = ["hyperfine", "-N", "-i", "--style", "none", "--warmup", "5", "-r", String(VERSION_RUNS), "--export-json", json, ...commands.map((x) => x.argv.join(" "))];
    const r = Bun.spawnSync(argv, { env, stdout: "ignore", stderr: "pipe" });
    if (r.exitCode === 0) {
      const results = (JSON.parse(readFileSync(json, "utf8")) as { results: { mean: number }[] }).results;
      return { ms: results.map((x) => x.mean * 1000), how: `hyperfine -N, mean of ${VERSION_RUNS}` };
    }
  }
  const ms = commands.map((x) => {
    for (let i = 0; i < 5; i++) Bun.spawnSync(x.argv, { env, stdio: ["ignore", "ignore", "ignore"] });
    let sum = 0;
    for (let i = 0; i < VERSION_RUNS; i++) {
      const t = performance.now();
      Bun.spawnSync(x.argv, { env, stdio: ["ignore", "ignore", "ignore"] });
      sum += performance.now() - t;
    }
    return sum / VERSION_RUNS;
  });
  return { ms, how: `Bun.spawnSync, mean of ${VERSION_RUNS}` };
}

/** A pool of `workers` serving `cat` on 127.0.0.1 (the shape of scenarios.ts's pools). */
const poolOf = (name: string, socket: string, workers: number, extra: string[] = []): Contender => ({
  name,
  argv: (port) => [socket, "-p", "cat", "-l", "-f", "-W", String(workers), ...extra, "-B", "127.0.0.1", "-s", String(port)],
});

export async function startupScenario(b: Bench): Promise<StartupResult> {
  const previous = buildOf(b, PREVIOUS_COMMIT, process.env.BENCH_PREVIOUS);
  if ("why" in previous) return { note: `the previous build: ${previous.why}` };
  const builds = [
    { name: THIS_BUILD, socket: b.socket },
    { name: PREVIOUS_BUILD, socket: previous.path },
  ];

  const floor = bunFloor(b);
  const starts = builds.map((x) => ({ argv: [x.socket, "-version"] }));
  if ("path" in floor) starts.push({ argv: [floor.path] }, { argv: [b.socket, WORKER_FLAG] });
  log(`startup: -version${"path" in floor ? `, the one-line Bun program, a worker's start` : ""}: ${VERSION_RUNS} runs each`);
  const version = startTimes(b, starts);
  const floorFigures: Partial<StartupResult> =
    "path" in floor ? { bunFloorMs: version.ms[2], workerStartMs: version.ms[3] } : { floorNote: `\`${BUN_FLOOR_SOURCE}\` could not be compiled: ${floor.why}` };

  log(`startup: launch to first answer of -W 4, ${STARTUP_LAUNCHES} launches each, alternating`);
  const launches = builds.map((): number[] => []);
  for (let i = 0; i < STARTUP_LAUNCHES; i++) {
    for (const [k, x] of builds.entries()) {
      const server = await start(poolOf(x.name, x.socket, 4));
      launches[k].push(server.readyMs);
      await stop(server);
    }
  }

  log(`startup: respawn storm (-W 4 --max-requests 1, 8 at a time), ${ROUNDS} rounds of ${ROUND_S} s each, rotating`);
  const stormServers: Server[] = [];
  for (const x of builds) stormServers.push(await start(poolOf(x.name, x.socket, 4, ["--max-requests", "1"])));
  let storm: Summary[];
  try {
    const rounds = await rotate(stormServers.map(accounted), (k) => closedLoop(stormServers[k].port, 8, ROUND_S));
    storm = rounds.results.map((runs) => summarize(runs));
  } finally {
    for (const s of stormServers) await stop(s);
  }

  const idle = builds.map((): Record<number, IdlePool> => ({}));
  for (const n of IDLE_WORKERS) {
    for (const [k, x] of builds.entries()) {
      log(`startup: idle pool -W ${n}, ${x.name}`);
      idle[k][n] = await idlePool(poolOf(`${x.name} -W ${n}`, x.socket, n), n);
    }
  }

  return {
    ...floorFigures,
    builds: builds.map((x, k) => ({
      name: x.name,
      versionMs: version.ms[k],
      versionHow: version.how,
      launchMs: launches[k].sort((a, c) => a - c),
      storm: storm[k],
      idle: idle[k],
    })),
  };
}

/** This build's and the previous build's rows, when both were measured. */
export function startupPair(r: { startup?: StartupResult }): { now: StartupBuild; then: StartupBuild } | undefined {
  const now = r.startup?.builds?.find((x) => x.name === THIS_BUILD);
  const then = r.startup?.builds?.find((x) => x.name === PREVIOUS_BUILD);
  return now && then ? { now, then } : undefined;
}

export const launchMedian = (x: StartupBuild) => median(x.launchMs);
