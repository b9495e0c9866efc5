// Measuring: /proc (CPU time, PSS, wake-ups), closed loops in rotating
// rounds, one-at-a-time turnaround, 100 MB transfers, idle pools, and the
// floors (a program started with no network, the network with no program).
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { usageNs, type Cgroup } from "./cgroup.ts";
import { IDLE_CPU_S, IDLE_PAUSE_MS, IDLE_SETTLE_MS, QUICK, ROUND_S, ROUNDS } from "./config.ts";
import { closedLoop, percentile, transfer, type Outcome, type Run } from "./loadgen.ts";
import { start, stop, type Contender, type Server } from "./scenarios.ts";

// --- /proc ---------------------------------------------------------------------

export function read(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return ""; // the process has ended meanwhile
  }
}

const childrenOf = (pid: number): number[] => {
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  return tasks.flatMap((task) => read(`/proc/${pid}/task/${task}/children`).split(/\s+/).filter(Boolean).map(Number));
};

/** A process and all its descendants (children of every thread). */
export function tree(root: number): number[] {
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0 && out.length < 10_000) {
    const pid = queue.shift()!;
    out.push(pid);
    queue.push(...childrenOf(pid));
  }
  return out;
}

const TICK_MS = 1000 / Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim() || 100);

/** CPU time of each process of a tree: its own, and that of the children it has reaped. */
export type CpuSample = Map<string, { own: number; reaped: number }>;

export function cpuSample(root: number): CpuSample {
  const sample: CpuSample = new Map();
  for (const pid of tree(root)) {
    // Fields after "(comm)": state is 3, utime 14, stime 15, cutime 16, cstime 17, starttime 22.
    const stat = read(`/proc/${pid}/stat`);
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
    if (f.length < 20) continue;
    sample.set(`${pid}:${f[19]}`, { own: (f[11] + f[12]) * TICK_MS, reaped: (f[13] + f[14]) * TICK_MS });
  }
  return sample;
}

export interface Cpu {
  /** The server's own processes, alive through the measurement (master, workers). */
  server: number;
  /** Processes per connection (cat, sh, a forked child, a prestarted program): ended and reaped, or new. */
  programs: number;
}

export function cpuSpent(before: CpuSample, after: CpuSample): Cpu {
  let server = 0;
  let programs = 0;
  for (const [key, now] of after) {
    const then = before.get(key);
    if (then) server += now.own - then.own;
    else programs += now.own;
    programs += now.reaped - (then?.reaped ?? 0);
  }
  return { server, programs };
}

/** A server whose CPU is measured: the top of its process tree, and its cgroup when it has one. */
export interface Accounted {
  pid: number;
  cgroup?: Cgroup;
}

export const accounted = (s: Server): Accounted => ({ pid: s.proc.pid, cgroup: s.cgroup });

/** A server's CPU at one moment: its tree from /proc, and its cgroup's total (ns) when it has one. */
export interface Usage {
  sample: CpuSample;
  cgroupNs?: number;
}

export const usage = (a: Accounted): Usage => ({ sample: cpuSample(a.pid), cgroupNs: a.cgroup && usageNs(a.cgroup) });

/**
 * The CPU spent between two readings. "server" is always the long-lived
 * processes' own (/proc). With a cgroup, "programs" is the cgroup's total
 * less that: every process the server started counts, whoever reaped it
 * (at 0 at least: /proc's figures are whole ticks). Without, it is what
 * /proc charges: processes that came, and the children the tree reaped.
 */
export function cpuBetween(before: Usage, after: Usage): Cpu {
  const proc = cpuSpent(before.sample, after.sample);
  if (before.cgroupNs === undefined || after.cgroupNs === undefined) return proc;
  const totalMs = (after.cgroupNs - before.cgroupNs) / 1e6;
  return { server: proc.server, programs: Math.max(0, totalMs - proc.server) };
}

/** Busy milliseconds of the whole machine (every CPU), from /proc/stat. */
export function machineBusyMs(): number {
  const [user, nice, system, , , irq, softirq, steal] = read("/proc/stat").split("\n")[0].split(/\s+/).slice(1).map(Number);
  return (user + nice + system + irq + softirq + steal) * TICK_MS;
}

export function ownCpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

/**
 * Proportional set size in MB: each shared page counts split among the
 * processes that map it. `anon` is the process's own heap and stacks,
 * `file` its share of the executable's and libraries' pages.
 */
export function memory(pid: number): { pss: number; anon: number; file: number } {
  const text = read(`/proc/${pid}/smaps_rollup`);
  const mb = (field: string) => Number(text.match(new RegExp(`^${field}:\\s+(\\d+)`, "m"))?.[1] ?? NaN) / 1024;
  return { pss: mb("Pss"), anon: mb("Pss_Anon"), file: mb("Pss_File") };
}

/** Times a process's main thread has gone to sleep and been woken (voluntary context switches). */
function mainThreadSwitches(pid: number): number {
  return Number(read(`/proc/${pid}/task/${pid}/status`).match(/^voluntary_ctxt_switches:\s+(\d+)/m)?.[1] ?? NaN);
}

// --- rounds ------------------------------------------------------------------------

/**
 * One request at a time, each target in turn, with a pause after each, so
 * every server meets an idle machine and load from elsewhere falls on all alike.
 */
export async function oneAtATime(probes: (() => Promise<Outcome>)[], count: number): Promise<Run[]> {
  const runs = probes.map((): Run => ({ outcomes: [], seconds: 0 }));
  for (let i = 0; i < count; i++) {
    for (const [k, probe] of probes.entries()) {
      runs[k].outcomes.push(await probe());
      await Bun.sleep(IDLE_PAUSE_MS);
    }
  }
  return runs;
}

/**
 * ROUNDS rounds, each visiting every server once with the order rotating
 * (round r starts at server r), so that background load falls on all alike.
 * `measure` runs one round of one server; the CPU its processes (cpuBetween)
 * and the load generator spent in it is added up per server.
 */
export async function rotate<T>(roots: Accounted[], measure: (k: number) => Promise<T>) {
  const results = roots.map((): T[] => []);
  const cpu = roots.map(() => ({ server: 0, programs: 0, loadgen: 0 }));
  let busy = 0;
  let ours = 0;
  let seconds = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < roots.length; i++) {
      const k = (i + round) % roots.length;
      const before = usage(roots[k]);
      const [loadgenBefore, busyBefore, started] = [ownCpuMs(), machineBusyMs(), performance.now()];
      results[k].push(await measure(k));
      const spent = cpuBetween(before, usage(roots[k]));
      const loadgen = ownCpuMs() - loadgenBefore;
      cpu[k].server += spent.server;
      cpu[k].programs += spent.programs;
      cpu[k].loadgen += loadgen;
      busy += machineBusyMs() - busyBefore;
      ours += spent.server + spent.programs + loadgen;
      seconds += (performance.now() - started) / 1000;
    }
  }
  return { results, cpu, elsewhereMs: busy - ours, seconds };
}

/** The closed loop at one concurrency, in rotating rounds of ROUND_S per server. */
export const closedLoops = (servers: Server[], concurrency: number) =>
  rotate(servers.map(accounted), (k) => closedLoop(servers[k].port, concurrency, ROUND_S));

/** The payload echoed through one connection per server, `runs` times each, the order rotating. */
export async function transfers(servers: Server[], payload: Uint8Array, runs: number) {
  const out = servers.map(() => ({ mbPerSecond: [] as number[], error: "" }));
  for (let run = 0; run < runs; run++) {
    for (let i = 0; i < servers.length; i++) {
      // The garbage of the last transfer is collected first, so that no
      // server always gets the load generator's GC pause.
      const k = (i + run) % servers.length;
      Bun.gc(true);
      const t = await transfer(servers[k].port, payload);
      out[k].mbPerSecond.push(t.mbPerSecond);
      out[k].error ||= t.error;
    }
  }
  return out;
}

export interface IdlePool {
  name: string;
  count: number;
  master: number;
  workerMean: number;
  workerMin: number;
  workerMax: number;
  anonMean: number;
  fileMean: number;
  /** utime + stime of the whole tree (master, workers, prestarted programs) over IDLE_CPU_S. */
  idleCpuPercent: number;
  /** Voluntary context switches of a worker's main thread per second, mean over the workers. */
  wakeupsPerSecond: number;
}

/**
 * CPU time of every thread of these processes, in ns, by thread
 * (/proc/PID/task/TID/schedstat): utime and stime count in 10 ms ticks,
 * too coarse for an idle pool's few milliseconds.
 */
function threadRuntimes(pids: number[]): Map<string, number> {
  const times = new Map<string, number>();
  for (const pid of pids) {
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue; // gone
    }
    for (const tid of tasks) {
      const stat = read(`/proc/${pid}/task/${tid}/schedstat`);
      if (stat) times.set(`${pid}/${tid}`, Number(stat.split(" ")[0]));
    }
  }
  return times;
}

/** CPU ms spent between two samples; a thread that ended meanwhile (JSC's helpers come and go) counts what it had. */
function runtimeSpentMs(before: Map<string, number>, after: Map<string, number>): number {
  let ns = 0;
  for (const [task, end] of after) ns += end - (before.get(task) ?? 0);
  return ns / 1e6;
}

/** Every worker of a fresh, idle pool started and settled, then its PSS, idle CPU (all threads) and wake-ups. */
export async function idlePool(c: Contender, workers: number): Promise<IdlePool> {
  const server = await start(c);
  try {
    const until = performance.now() + 30_000;
    // The master's children: the workers (not their prestarted programs).
    const workerPids = () => childrenOf(server.proc.pid);
    while (workerPids().length < workers && performance.now() < until) await Bun.sleep(50);
    // Settled: start-up garbage collected, and JSC's warm-up threads (busy
    // for a few seconds after a start) done; then every worker waits.
    await Bun.sleep(IDLE_SETTLE_MS);
    const pids = workerPids();
    const everyone = tree(server.proc.pid);
    const before = threadRuntimes(everyone);
    const switchesBefore = pids.map(mainThreadSwitches);
    await Bun.sleep(IDLE_CPU_S * 1000);
    const spentMs = runtimeSpentMs(before, threadRuntimes(everyone));
    const switches = pids.map((pid, i) => mainThreadSwitches(pid) - switchesBefore[i]).filter(Number.isFinite);
    const ws = pids.map(memory);
    const pss = ws.map((m) => m.pss).sort((a, b) => a - b);
    const mean = (xs: number[]) => xs.reduce((s, v) => s + v, 0) / xs.length;
    return {
      name: c.name,
      count: ws.length,
      master: memory(server.proc.pid).pss,
      workerMean: mean(pss),
      workerMin: pss[0],
      workerMax: pss[pss.length - 1],
      anonMean: mean(ws.map((m) => m.anon)),
      fileMean: mean(ws.map((m) => m.file)),
      idleCpuPercent: (spentMs / (IDLE_CPU_S * 1000)) * 100,
      wakeupsPerSecond: mean(switches) / IDLE_CPU_S,
    };
  } finally {
    await stop(server);
  }
}

// --- floors --------------------------------------------------------------------------

export interface Floor {
  name: string;
  ms: number;
}

/** Milliseconds to run commands with no network, stdin from /dev/null: the floor under every contender. */
export function floors(scratch: string, commands: { name: string; argv: string[] }[]): Floor[] {
  const runs = QUICK ? 100 : 300;
  if (Bun.which("hyperfine")) {
    const json = join(scratch, "floor.json");
    // -N: no intermediate shell; hyperfine gives the command /dev/null as stdin.
    const r = Bun.spawnSync(["hyperfine", "-N", "--style", "none", "--warmup", "20", "--runs", String(runs), "--export-json", json, ...commands.map((c) => c.argv.join(" "))]);
    if (r.exitCode === 0) {
      const results = (JSON.parse(readFileSync(json, "utf8")) as { results: { median: number }[] }).results;
      return commands.map((c, i) => ({ name: `\`${c.name} </dev/null\` (hyperfine, median)`, ms: results[i].median * 1000 }));
    }
  }
  const time = (argv: string[]) => {
    const times: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      Bun.spawnSync(argv, { stdio: ["ignore", "ignore", "ignore"] });
      times.push(performance.now() - t);
    }
    return percentile(times.sort((a, b) => a - b), 50);
  };
  return commands.map((c) => ({ name: `\`${c.name} </dev/null\` (Bun.spawnSync, median)`, ms: time(c.argv) }));
}

/** What a worker pays per connection for the program alone: Bun.spawn of cat on /dev/null, awaited. */
export async function bunSpawnMs(): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < (QUICK ? 100 : 300); i++) {
    const t = performance.now();
    await Bun.spawn(["cat"], { stdio: ["ignore", "ignore", "ignore"] }).exited;
    times.push(performance.now() - t);
  }
  return percentile(times.sort((a, b) => a - b), 50);
}
