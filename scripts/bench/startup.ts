// Start-up and memory against the previous release's build (issue 18), both
// measured in this run: `socket -version`, launch to the first answer of
// `-W 4`, a respawn storm (`--max-requests 1`, 8 clients at a time) and idle
// PSS per worker at -W 4 and -W 64. The previous build is commit
// PREVIOUS_COMMIT (before --bytecode), built here from git into a temporary
// directory under the run's scratch (removed with it), or taken from
// BENCH_PREVIOUS=/path/to/socket.
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { LAUNCHES, QUICK, ROOT, ROUND_S, ROUNDS, log } from "./config.ts";
import { closedLoop, median, summarize, type Summary } from "./loadgen.ts";
import { idlePool, rotate, type IdlePool } from "./measure.ts";
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
  /** Why the comparison did not run (the previous build could not be built). */
  note?: string;
}

/** Runs a command; on failure, its last line of output as the reason. */
function run(argv: string[], cwd: string): string | undefined {
  const r = Bun.spawnSync(argv, { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode === 0) return undefined;
  const last = `${r.stdout.toString()}\n${r.stderr.toString()}`.trim().split("\n").pop() ?? "";
  return `\`${argv.join(" ")}\` failed (exit ${r.exitCode}): ${last}`;
}

/** The previous build's executable at `into`, or why it could not be made. */
function previousBuild(b: Bench, into: string): string | undefined {
  if (process.env.BENCH_PREVIOUS) {
    copyFileSync(process.env.BENCH_PREVIOUS, into);
    return undefined;
  }
  log(`startup: building ${PREVIOUS_COMMIT} from git (npm ci, npm run build)`);
  const dir = mkdtempSync(join(b.scratch, "previous-"));
  try {
    // git archive: a plain tree, nothing left in the repository's worktree list.
    const why =
      run(["sh", "-c", 'git archive "$1" | tar -x -C "$2"', "sh", PREVIOUS_COMMIT, dir], ROOT) ??
      run(["npm", "ci", "--no-audit", "--no-fund"], dir) ??
      run(["npm", "run", "build"], dir);
    if (why) return why;
    copyFileSync(join(dir, "dist", "socket"), into);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  } finally {
    rmSync(dir, { recursive: true, force: true }); // its node_modules is large
  }
}

/** Mean ms of `socket -version` for each executable, hyperfine when installed. */
function versionTimes(b: Bench, executables: string[]): { ms: number[]; how: string } {
  if (Bun.which("hyperfine")) {
    const json = join(b.scratch, "version.json");
    const r = Bun.spawnSync(["hyperfine", "-N", "--style", "none", "--warmup", "5", "-r", String(VERSION_RUNS), "--export-json", json, ...executables.map((x) => `${x} -version`)]);
    if (r.exitCode === 0) {
      const results = (JSON.parse(readFileSync(json, "utf8")) as { results: { mean: number }[] }).results;
      return { ms: results.map((x) => x.mean * 1000), how: `hyperfine -N, mean of ${VERSION_RUNS}` };
    }
  }
  const ms = executables.map((x) => {
    for (let i = 0; i < 5; i++) Bun.spawnSync([x, "-version"]);
    let sum = 0;
    for (let i = 0; i < VERSION_RUNS; i++) {
      const t = performance.now();
      Bun.spawnSync([x, "-version"], { stdio: ["ignore", "ignore", "ignore"] });
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
  const previous = join(b.scratch, "socket-previous");
  const why = previousBuild(b, previous);
  if (why) return { note: `the previous build (${PREVIOUS_COMMIT}) could not be built: ${why}` };
  const builds = [
    { name: THIS_BUILD, socket: b.socket },
    { name: PREVIOUS_BUILD, socket: previous },
  ];

  log(`startup: -version, ${VERSION_RUNS} runs each`);
  const version = versionTimes(b, builds.map((x) => x.socket));

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
    const rounds = await rotate(stormServers.map((s) => s.proc.pid), (k) => closedLoop(stormServers[k].port, 8, ROUND_S));
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
