// `npm run bench`: socket's prefork pool against socket -f (a process per
// connection), tcpserver and socat, all serving `cat` on 127.0.0.1 in one
// run (the machine is shared and noisy: compare ratios within a run, not
// absolute numbers across runs). Prints the tables, writes
// docs/BENCHMARKS.md and docs/bench.png. BENCH_QUICK=1 (or --quick) makes
// every phase short, for trying the script out.
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import type { Subprocess } from "bun";
import { bulkPayload, closedLoop, exchange, percentile, REQUEST, summarize, transfer, type Run, type Summary } from "./loadgen.ts";

const ROOT = join(import.meta.dir, "..");
const QUICK = process.env.BENCH_QUICK === "1" || process.argv.includes("--quick");
/** Closed-loop seconds per concurrency, run as 1 s rounds that rotate through the servers. */
const ROUNDS = QUICK ? 1 : 5;
const ROUND_S = 1;
const IDLE_COUNT = QUICK ? 50 : 200;
const IDLE_PAUSE_MS = 10;
const TRANSFER_MB = QUICK ? 20 : 100;
const TRANSFER_RUNS = 5;
const LAUNCHES = QUICK ? 3 : 5;
const IDLE_CPU_S = QUICK ? 1 : 3;
const CONCURRENCY = [1, 8, 64] as const;
const log = (line: string) => console.error(`bench: ${line}`);
const CORES = navigator.hardwareConcurrency;

// A private copy of the executable: the other work in this tree may rebuild
// dist/socket mid-run, and processes of another copy would share (and so
// shrink the PSS of) its pages.
const scratch = mkdtempSync(join(tmpdir(), "socket-bench-"));
const SOCKET = join(scratch, "socket");
copyFileSync(join(ROOT, "dist", "socket"), SOCKET);

// --- the contenders --------------------------------------------------------

interface Contender {
  name: string;
  argv: (port: number) => string[];
  /** The Debian program it needs (scripts/install-bench-deps.sh). */
  needs?: string;
}

const pool = (workers: string, extra: string[] = []) => (port: number) =>
  [SOCKET, "-p", "cat", "-l", "-f", "-W", workers, ...extra, "-B", "127.0.0.1", "-s", String(port)];

const W4: Contender = { name: "socket -W 4", argv: pool("4") };
const CONTENDERS: Contender[] = [
  W4,
  { name: "socket -W 2:16", argv: pool("2:16") },
  { name: "socket -f", argv: (port) => [SOCKET, "-s", "-l", "-f", "-p", "cat", "-B", "127.0.0.1", String(port)] },
  // -c 64: as many programs at once as the largest concurrency measured.
  { name: "tcpserver", needs: "tcpserver", argv: (port) => ["tcpserver", "-RHl0", "-b", "256", "-c", "64", "127.0.0.1", String(port), "cat"] },
  {
    name: "socat",
    needs: "socat",
    argv: (port) => ["socat", `TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr,backlog=256`, "SYSTEM:cat"],
  },
];
/**
 * The network floor: a Bun event loop in a process of its own that echoes
 * the request with no program started (only for the idle turnaround,
 * where a reply always fits in one write).
 */
const ECHO: Contender = {
  name: "no program (Bun echo server)",
  argv: (port) => [
    process.execPath,
    "-e",
    `Bun.listen({ hostname: "127.0.0.1", port: ${port}, allowHalfOpen: true, socket: { data: (s, d) => void s.write(d), end: (s) => void s.end() } })`,
  ],
};
/** The copy loop: -c (CRLF) forces it; the payload has no CR or LF, so it echoes unchanged. */
const W4_COPY: Contender = { name: "socket -W 4 -c (copy loop)", argv: pool("4", ["-c"]) };

// --- servers -----------------------------------------------------------------

interface Server {
  name: string;
  proc: Subprocess;
  port: number;
  /** Launch to the first answered connection, in ms. */
  readyMs: number;
}

const running = new Set<Server>();

/** A port nobody listens on now: bind port 0, note the port, let go. */
function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

const PING = new TextEncoder().encode("ready?"); // no LF, which -c would turn into CRLF

/**
 * Starts a server in a process group of its own (so stopping it ends its
 * workers and programs too) and waits until it answers a connection.
 */
async function start(contender: Contender): Promise<Server> {
  const port = freePort();
  const argv = contender.argv(port);
  const launched = performance.now();
  const proc = Bun.spawn(argv, { stdio: ["ignore", "ignore", "inherit"], detached: true });
  const server: Server = { name: contender.name, proc, port, readyMs: NaN };
  running.add(server);
  // Refused connections come back at once, so this polls about every ms.
  while (!(await exchange({ port }, PING, 2000)).ok) {
    if (performance.now() - launched > 15_000 || proc.exitCode !== null) {
      await stop(server);
      throw new Error(`${argv.join(" ")} did not answer within 15 s`);
    }
    await Bun.sleep(1);
  }
  server.readyMs = performance.now() - launched;
  return server;
}

async function stop(server: Server): Promise<void> {
  running.delete(server);
  try {
    process.kill(-server.proc.pid, "SIGKILL");
  } catch {
    // the group is already gone
  }
  // Bounded, and with a timer that does not keep the benchmark alive once done.
  let timer: Timer | undefined;
  await Promise.race([server.proc.exited, new Promise((resolve) => (timer = setTimeout(resolve, 5000).unref()))]);
  clearTimeout(timer);
}

const stopAll = () => Promise.all([...running].map(stop));

// --- /proc ---------------------------------------------------------------------

function read(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return ""; // the process has ended meanwhile
  }
}

/** A process and all its descendants (children of every thread). */
function tree(root: number): number[] {
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0 && out.length < 10_000) {
    const pid = queue.shift()!;
    out.push(pid);
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const task of tasks) queue.push(...read(`/proc/${pid}/task/${task}/children`).split(/\s+/).filter(Boolean).map(Number));
  }
  return out;
}

const TICK_MS = 1000 / Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim() || 100);

/** CPU time of each process of a tree: its own, and that of the children it has reaped. */
type CpuSample = Map<string, { own: number; reaped: number }>;

function cpuSample(root: number): CpuSample {
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

interface Cpu {
  /** The server's own processes, alive through the measurement (master, workers). */
  server: number;
  /** Processes per connection (cat, sh, a forked child): ended and reaped, or new. */
  programs: number;
}

function cpuSpent(before: CpuSample, after: CpuSample): Cpu {
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

/** Busy milliseconds of the whole machine (every CPU), from /proc/stat. */
function machineBusyMs(): number {
  const [user, nice, system, , , irq, softirq, steal] = read("/proc/stat").split("\n")[0].split(/\s+/).slice(1).map(Number);
  return (user + nice + system + irq + softirq + steal) * TICK_MS;
}

function ownCpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

/**
 * Proportional set size in MB: each shared page counts split among the
 * processes that map it. `anon` is the process's own heap and stacks,
 * `file` its share of the executable's and libraries' pages.
 */
function memory(pid: number): { pss: number; anon: number; file: number } {
  const text = read(`/proc/${pid}/smaps_rollup`);
  const mb = (field: string) => Number(text.match(new RegExp(`^${field}:\\s+(\\d+)`, "m"))?.[1] ?? NaN) / 1024;
  return { pss: mb("Pss"), anon: mb("Pss_Anon"), file: mb("Pss_File") };
}

// --- the scenarios ---------------------------------------------------------------

/** One connection at a time, each server in turn, with a pause after each. */
async function idleTurnaround(servers: Server[]): Promise<Run[]> {
  const runs = servers.map((): Run => ({ outcomes: [], seconds: 0 }));
  for (let i = 0; i < IDLE_COUNT; i++) {
    for (const [k, server] of servers.entries()) {
      runs[k].outcomes.push(await exchange({ port: server.port }, REQUEST));
      await Bun.sleep(IDLE_PAUSE_MS);
    }
  }
  return runs;
}

/**
 * The closed loop at one concurrency: rounds of ROUND_S per server, the
 * order rotating, so that load from elsewhere on the machine falls on
 * every server alike. Also the CPU each server and the load generator spent.
 */
async function closedLoops(servers: Server[], concurrency: number) {
  const runs = servers.map((): Run[] => []);
  const cpu = servers.map(() => ({ server: 0, programs: 0, loadgen: 0 }));
  let busy = 0;
  let ours = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < servers.length; i++) {
      const k = (i + round) % servers.length;
      const before = cpuSample(servers[k].proc.pid);
      const [loadgenBefore, busyBefore] = [ownCpuMs(), machineBusyMs()];
      runs[k].push(await closedLoop(servers[k].port, concurrency, ROUND_S));
      const spent = cpuSpent(before, cpuSample(servers[k].proc.pid));
      const loadgen = ownCpuMs() - loadgenBefore;
      cpu[k].server += spent.server;
      cpu[k].programs += spent.programs;
      cpu[k].loadgen += loadgen;
      busy += machineBusyMs() - busyBefore;
      ours += spent.server + spent.programs + loadgen;
    }
  }
  return { runs, cpu, elsewhereMs: busy - ours };
}

/** Every worker of a fresh, idle pool started and settled, then the PSS of each process. */
async function idleMemory(workers: number) {
  const server = await start({ name: `socket -W ${workers}`, argv: pool(String(workers)) });
  try {
    const until = performance.now() + 30_000;
    while (tree(server.proc.pid).length < workers + 1 && performance.now() < until) await Bun.sleep(50);
    await Bun.sleep(1500); // the workers' start-up garbage collected, all waiting in accept()
    // What the pool costs doing nothing: its workers wake up now and then.
    const before = cpuSample(server.proc.pid);
    await Bun.sleep(IDLE_CPU_S * 1000);
    const spent = cpuSpent(before, cpuSample(server.proc.pid));
    const pids = tree(server.proc.pid);
    const ws = pids.slice(1).map(memory);
    const pss = ws.map((m) => m.pss).sort((a, b) => a - b);
    return {
      name: `socket -W ${workers}`,
      count: ws.length,
      master: memory(server.proc.pid).pss,
      workerMean: pss.reduce((s, v) => s + v, 0) / pss.length,
      workerMin: pss[0],
      workerMax: pss[pss.length - 1],
      anonMean: ws.reduce((s, m) => s + m.anon, 0) / ws.length,
      fileMean: ws.reduce((s, m) => s + m.file, 0) / ws.length,
      idleCpuPercent: ((spent.server + spent.programs) / (IDLE_CPU_S * 1000)) * 100,
    };
  } finally {
    await stop(server);
  }
}

/** Milliseconds to run a command with no network, stdin from /dev/null: the floor under every contender. */
function floors(): { name: string; ms: number }[] {
  const runs = QUICK ? 100 : 300;
  if (Bun.which("hyperfine")) {
    const json = join(scratch, "floor.json");
    // -N: no intermediate shell; hyperfine gives the command /dev/null as stdin.
    const r = Bun.spawnSync(["hyperfine", "-N", "--style", "none", "--warmup", "20", "--runs", String(runs), "--export-json", json, "sh -c cat", "cat"]);
    if (r.exitCode === 0) {
      const results = (JSON.parse(readFileSync(json, "utf8")) as { results: { median: number }[] }).results;
      return [
        { name: "`sh -c cat </dev/null` (hyperfine, median)", ms: results[0].median * 1000 },
        { name: "`cat </dev/null` (hyperfine, median)", ms: results[1].median * 1000 },
      ];
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
  return [
    { name: "`sh -c cat </dev/null` (Bun.spawnSync, median)", ms: time(["sh", "-c", "cat"]) },
    { name: "`cat </dev/null` (Bun.spawnSync, median)", ms: time(["cat"]) },
  ];
}

/** What a worker pays per connection for the program alone: Bun.spawn of cat on /dev/null, awaited. */
async function bunSpawnMs(): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < (QUICK ? 100 : 300); i++) {
    const t = performance.now();
    await Bun.spawn(["cat"], { stdio: ["ignore", "ignore", "ignore"] }).exited;
    times.push(performance.now() - t);
  }
  return percentile(times.sort((a, b) => a - b), 50);
}

// --- the run -----------------------------------------------------------------------

async function main(): Promise<void> {
  const available = CONTENDERS.filter((c) => !c.needs || Bun.which(c.needs));
  const notes = CONTENDERS.filter((c) => !available.includes(c)).map(
    (c) => `${c.name} skipped: \`${c.needs}\` is not installed (run scripts/install-bench-deps.sh as root).`,
  );
  if (!Bun.which("hyperfine")) notes.push("hyperfine is not installed: the floor was timed with Bun.spawnSync instead.");
  for (const note of notes) log(note);

  log(`starting ${available.map((c) => c.name).join(", ")} and ${W4_COPY.name}`);
  const servers: Server[] = [];
  for (const c of available) servers.push(await start(c));
  const copyServer = await start(W4_COPY);
  const echoServer = await start(ECHO);

  log(`idle turnaround: ${IDLE_COUNT} connections to each, one at a time`);
  const idle = (await idleTurnaround([...servers, echoServer])).map((run) => summarize([run]));
  const networkFloor = idle.pop()!;

  const loops = servers.map((): Record<number, Summary> => ({}));
  const cpu8 = servers.map(() => ({ server: 0, programs: 0, loadgen: 0 }));
  let elsewhere = 0;
  let loopSeconds = 0;
  for (const c of CONCURRENCY) {
    log(`closed loop at ${c}: ${ROUNDS} × ${ROUND_S} s each`);
    const result = await closedLoops(servers, c);
    result.runs.forEach((runs, k) => (loops[k][c] = summarize(runs)));
    elsewhere += result.elsewhereMs;
    loopSeconds += result.runs.flat().reduce((s, r) => s + r.seconds, 0);
    if (c === 8) {
      result.cpu.forEach((spent, k) => {
        const n = loops[k][8].count;
        cpu8[k] = { server: spent.server / n, programs: spent.programs / n, loadgen: spent.loadgen / n };
      });
    }
  }

  log(`${TRANSFER_MB} MB through one connection, ${TRANSFER_RUNS} times each`);
  const payload = bulkPayload(TRANSFER_MB);
  // The first transfers of a process run slow (its buffers and code are new): warm up first.
  for (let i = 0; i < 2; i++) await transfer(servers[0].port, payload);
  const transferServers = [servers[0], copyServer, ...servers.slice(1).filter((s) => s.name !== "socket -W 2:16")];
  const transfers = transferServers.map(() => ({ mbPerSecond: [] as number[], error: "" }));
  for (let run = 0; run < TRANSFER_RUNS; run++) {
    for (let i = 0; i < transferServers.length; i++) {
      // The order rotates, and the garbage of the last 100 MB is collected
      // first, so that no server always gets the load generator's GC pause.
      const k = (i + run) % transferServers.length;
      Bun.gc(true);
      const t = await transfer(transferServers[k].port, payload);
      transfers[k].mbPerSecond.push(t.mbPerSecond);
      transfers[k].error ||= t.error;
    }
  }
  await stopAll();

  log("idle memory, -W 4 and -W 64, each pool alone");
  const memories = [await idleMemory(4), await idleMemory(64)];

  log(`launch to first answered connection, ${LAUNCHES} launches each`);
  const launchContenders = available.filter((c) => c.name !== "socket -W 2:16");
  const launches = launchContenders.map((): number[] => []);
  for (let i = 0; i < LAUNCHES; i++) {
    for (const [k, c] of launchContenders.entries()) {
      const server = await start(c);
      launches[k].push(server.readyMs);
      await stop(server);
    }
  }

  log("the floor: starting cat with no network");
  const floor = floors();
  const spawnMs = await bunSpawnMs();

  const results: Results = {
    names: servers.map((s) => s.name),
    idle,
    loops,
    cpu8,
    elsewherePercent: (100 * elsewhere) / (loopSeconds * 1000 * CORES),
    transfers: transferServers.map((s, k) => ({ name: s.name, ...transfers[k] })),
    memories,
    launches: launchContenders.map((c, k) => ({ name: c.name, ms: launches[k].sort((a, b) => a - b) })),
    floor,
    spawnMs,
    networkFloor,
    notes,
  };
  const report = render(results);
  console.log(report.tables);
  writeFileSync(join(ROOT, "docs", "BENCHMARKS.md"), markdown(results, report));
  writeFileSync(join(ROOT, "docs", "bench.png"), chart(results));
  log("wrote docs/BENCHMARKS.md and docs/bench.png");
}

interface Results {
  names: string[];
  idle: Summary[];
  loops: Record<number, Summary>[];
  /** Milliseconds of CPU per connection in the closed loop at 8. */
  cpu8: (Cpu & { loadgen: number })[];
  /** Share of the machine's CPU used by other processes during the closed loops. */
  elsewherePercent: number;
  transfers: { name: string; mbPerSecond: number[]; error: string }[];
  memories: Awaited<ReturnType<typeof idleMemory>>[];
  launches: { name: string; ms: number[] }[];
  floor: { name: string; ms: number }[];
  spawnMs: number;
  /** Idle turnaround through the echo server: the network and the load generator, no program. */
  networkFloor: Summary;
  notes: string[];
}

// --- tables --------------------------------------------------------------------------

const f = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "–");
const median = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 50);

function table(head: string[], rows: string[][]): string {
  return [head, head.map(() => "---"), ...rows].map((r) => `| ${r.join(" | ")} |`).join("\n");
}

interface Target {
  what: string;
  value: string;
  pass: boolean;
}

function targets(r: Results): Target[] {
  const at = (name: string) => r.names.indexOf(name);
  const w4 = at(W4.name);
  const tcp = at("tcpserver");
  const out: Target[] = [];
  if (tcp >= 0) {
    const idle = r.idle[w4].p50 / r.idle[tcp].p50;
    out.push({ what: "idle turnaround p50 ≤ 0.7 × tcpserver's", value: `${f(idle, 2)} ×`, pass: idle <= 0.7 });
    const tput = r.loops[w4][8].perSecond / r.loops[tcp][8].perSecond;
    out.push({ what: "throughput at 8 concurrent ≥ 1.5 × tcpserver's", value: `${f(tput, 2)} ×`, pass: tput >= 1.5 });
  } else {
    out.push({ what: "idle turnaround and throughput against tcpserver", value: "tcpserver not installed", pass: false });
  }
  const c64 = r.loops[w4][64];
  out.push({ what: "at 64 concurrent: no failed connection", value: `${c64.failures} of ${c64.count} failed`, pass: c64.failures === 0 });
  out.push({ what: "at 64 concurrent: p99 < 3 × p50", value: `${f(c64.p99 / c64.p50, 2)} ×`, pass: c64.p99 < 3 * c64.p50 });
  const mb = (name: string) => r.transfers.find((t) => t.name === name)!;
  for (const [name, floor] of [[W4.name, 1024], [W4_COPY.name, 300]] as const) {
    const t = mb(name);
    const what = `${TRANSFER_MB} MB through cat ≥ ${floor === 1024 ? "1 GB/s, no copy" : "300 MB/s, copy loop (-c)"}`;
    out.push({ what, value: t.error || `${f(median(t.mbPerSecond), 0)} MB/s`, pass: !t.error && median(t.mbPerSecond) >= floor });
  }
  for (const m of r.memories) {
    out.push({ what: `idle worker PSS ≤ 8 MB, ${m.name}`, value: `${f(m.workerMean)} MB (max ${f(m.workerMax)})`, pass: m.workerMax <= 8 });
  }
  const launch = r.launches.find((l) => l.name === W4.name)!.ms;
  const worst = launch[launch.length - 1];
  out.push({ what: "first connection answered ≤ 200 ms after launch, -W 4 (worst launch)", value: `${f(worst)} ms`, pass: worst <= 200 });
  return out;
}

function render(r: Results): { tables: string; targets: Target[] } {
  const loopCells = (k: number) =>
    CONCURRENCY.flatMap((c) => {
      const s = r.loops[k][c];
      return [f(s.perSecond, 0), `${f(s.p50, 2)} / ${f(s.p99, 2)}`];
    });
  const fails = (k: number) => {
    const all = [r.idle[k], ...CONCURRENCY.map((c) => r.loops[k][c])];
    const n = all.reduce((s, x) => s + x.failures, 0);
    return n === 0 ? "0" : `${n} (${all.find((x) => x.firstError)?.firstError})`;
  };
  const main = table(
    ["server", "idle p50 / p99 ms", ...CONCURRENCY.flatMap((c) => [`c=${c} conn/s`, `c=${c} p50 / p99 ms`]), "failed"],
    r.names.map((name, k) => [name, `${f(r.idle[k].p50, 2)} / ${f(r.idle[k].p99, 2)}`, ...loopCells(k), fails(k)]),
  );
  const cpu = table(
    ["server", "server processes", "per-connection processes", "load generator", "all", "cores × 1000 ÷ all", "measured conn/s"],
    r.names.map((name, k) => {
      const c = r.cpu8[k];
      const all = c.server + c.programs + c.loadgen;
      return [name, f(c.server, 3), f(c.programs, 3), f(c.loadgen, 3), f(all, 3), f((CORES * 1000) / all, 0), f(r.loops[k][8].perSecond, 0)];
    }),
  );
  const transfers = table(
    ["server", "MB/s (median)", `all ${TRANSFER_RUNS} runs, in order`, "reply intact"],
    r.transfers.map((t) => [t.name, f(median(t.mbPerSecond), 0), t.mbPerSecond.map((v) => f(v, 0)).join(", "), t.error || "yes"]),
  );
  const memory = table(
    ["pool", "workers", "master PSS MB", "worker PSS MB mean (min–max)", "of which own heap (Pss_Anon)", "of which shared executable (Pss_File)", "idle CPU, % of a core"],
    r.memories.map((m) => [
      m.name,
      String(m.count),
      f(m.master),
      `${f(m.workerMean)} (${f(m.workerMin)}–${f(m.workerMax)})`,
      f(m.anonMean),
      f(m.fileMean),
      f(m.idleCpuPercent),
    ]),
  );
  const launch = table(
    ["server", "median ms", "worst ms"],
    r.launches.map((l) => [l.name, f(median(l.ms)), f(l.ms[l.ms.length - 1])]),
  );
  const floor = table(
    ["the floor", "ms"],
    [
      ...r.floor.map((x) => [`no network: ${x.name}`, f(x.ms, 2)]),
      ["no network: `cat </dev/null` through `await Bun.spawn(...).exited` (as a worker starts it), median", f(r.spawnMs, 2)],
      [`no program: idle turnaround through ${ECHO.name}, p50 / p99`, `${f(r.networkFloor.p50, 2)} / ${f(r.networkFloor.p99, 2)}`],
    ],
  );
  const t = targets(r);
  const target = table(["target (socket -W 4 unless said)", "this run", ""], t.map((x) => [x.what, x.value, x.pass ? "PASS" : "FAIL"]));
  const tables = [
    `### Connections: ${REQUEST.length} bytes echoed through \`cat\``,
    "",
    `Idle: ${IDLE_COUNT} connections one at a time. c=N: N connections at a time, closed loop, ${ROUNDS * ROUND_S} s. Latencies are connect to EOF.`,
    "",
    main,
    "",
    "### CPU milliseconds per connection (closed loop at 8)",
    "",
    cpu,
    "",
    `### ${TRANSFER_MB} MB through one connection (echoed by \`cat\`, sent and received at once)`,
    "",
    transfers,
    "",
    "### Idle memory",
    "",
    memory,
    "",
    `### Launch to the first answered connection (${LAUNCHES} launches)`,
    "",
    launch,
    "",
    "### The floor: starting the program alone, and the network alone",
    "",
    floor,
    "",
    "### Targets (issue 4), as ratios within this run",
    "",
    target,
    ...(r.notes.length ? ["", ...r.notes.map((n) => `Note: ${n}`)] : []),
  ].join("\n");
  return { tables, targets: t };
}

function sh(argv: string[]): string {
  try {
    return Bun.spawnSync(argv, { stderr: "ignore" }).stdout.toString().trim();
  } catch {
    return "";
  }
}

function machine(): string {
  const cpuinfo = read("/proc/cpuinfo");
  const field = (name: string) => cpuinfo.match(new RegExp(`^${name}\\s*:\\s*(.*)$`, "m"))?.[1] ?? "?";
  const processors = cpuinfo.match(/^processor\s*:/gm)?.length ?? 0;
  const memKb = Number(read("/proc/meminfo").match(/^MemTotal:\s+(\d+)/m)?.[1] ?? 0);
  const packages = sh(["dpkg-query", "-W", "-f", "${Package} ${Version}, ", "ucspi-tcp", "socat", "hyperfine", "coreutils"]).replace(/,$/, "");
  const commit = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]);
  const dirty = sh(["git", "-C", ROOT, "status", "--porcelain", "src"]) ? " plus uncommitted changes in src/" : "";
  return [
    `- CPU: ${processors} × ${field("model name")}, ${field("cpu MHz")} MHz, cache ${field("cache size")} (/proc/cpuinfo); nproc ${sh(["nproc"])}`,
    `- Memory: ${(memKb / 2 ** 20).toFixed(1)} GiB`,
    `- Kernel: ${sh(["uname", "-srvm"])}`,
    `- Bun ${Bun.version} (${Bun.revision.slice(0, 9)}); socket built from ${commit}${dirty}`,
    `- Others: ${packages || "not found by dpkg-query"}`,
  ].join("\n");
}

function markdown(r: Results, report: { tables: string; targets: Target[] }): string {
  const k = (name: string) => r.names.indexOf(name);
  const [w4, w216, tcp] = [k(W4.name), k("socket -W 2:16"), k("tcpserver")];
  const c = r.cpu8;
  const [sh, cat] = [r.floor[0].ms, r.floor[1].ms];
  const mb = (name: string) => median(r.transfers.find((t) => t.name === name)?.mbPerSecond ?? []);
  const launch = (name: string) => median(r.launches.find((l) => l.name === name)?.ms ?? []);
  const [m4, m64] = r.memories;
  const passed = report.targets.filter((t) => t.pass).length;
  // The bounds the targets run into, from this run's own numbers.
  const net = r.networkFloor.p50;
  let idleBound = "";
  let throughputBound = "(tcpserver was not installed, so the targets against it were not measured.)";
  if (tcp >= 0) {
    const goal = 0.7 * r.idle[tcp].p50;
    idleBound = ` The idle target, 0.7 × tcpserver's p50, is ${f(goal, 2)} ms: ${
      goal < cat
        ? "less than starting `cat` takes with no network at all"
        : `${f(goal - cat, 2)} ms more than starting \`cat\` takes, for the network (${f(net, 2)} ms alone) and the server together`
    }.`;
    const free = (CORES * 1000) / (c[w4].programs + c[w4].loadgen);
    throughputBound = `A server that cost no CPU at all would top out at about ${CORES} × 1000 ÷ (${f(c[w4].programs, 3)} + ${f(c[w4].loadgen, 3)}) =
  ${f(free, 0)} connections/s, ${f(free / r.loops[tcp][8].perSecond, 2)} × tcpserver's measured rate, against a target of 1.5 ×.`;
  }
  return `# Benchmarks

Generated by \`npm run bench\` (scripts/bench.ts, with scripts/loadgen.ts) on ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC${QUICK ? ", **quick mode: short phases, numbers rough**" : ""}.
${passed} of ${report.targets.length} targets pass in this run (the table at the end of the results).

## The machine

${machine()}

The machine is shared: during the closed loops, processes other than the
benchmark and its servers used ${f(r.elsewherePercent, 0)} % of its CPU time. Compare the
servers within this run (each phase rotates through them in ${ROUND_S} s rounds,
so such load falls on all alike), not absolute numbers across runs.

## How

Every server runs \`cat\` for each connection, on 127.0.0.1 TCP:

- \`socket -W 4\`: \`socket -p cat -l -f -W 4 -B 127.0.0.1 -s PORT\`, a fixed pool
- \`socket -W 2:16\`: the same with \`-W 2:16\`, a pool growing from 2 to 16 workers
- \`socket -f\`: \`socket -s -l -f -p cat -B 127.0.0.1 PORT\`, a process per connection
- tcpserver: \`tcpserver -RHl0 -b 256 -c 64 127.0.0.1 PORT cat\`
- socat: \`socat TCP-LISTEN:PORT,bind=127.0.0.1,fork,reuseaddr,backlog=256 SYSTEM:cat\`

The load generator is one Bun process that opens its connections
event-driven with \`Bun.connect\`; each connection connects, sends its
payload, half-closes, reads to EOF and compares the reply with the payload
byte for byte (a different or short reply is a failure). The servers run a
private copy of dist/socket, so that a rebuild during the run changes
nothing and no other process shares its pages. The CPU table adds up utime
and stime (/proc/PID/stat) over each server's process tree: "server
processes" are those alive through the measurement (master, workers,
tcpserver, socat's listener), "per-connection processes" the ones that came
and went (\`cat\`; socat's forked child and its \`sh\`; new workers of a
growing pool). PSS (/proc/PID/smaps_rollup) counts each shared page split
among the processes that map it. To install tcpserver, socat and
hyperfine: \`sudo scripts/install-bench-deps.sh\` (without them their rows
are skipped, with a note). \`BENCH_QUICK=1 npm run bench\` runs short phases
for trying the script out; the full run takes about two minutes.

## Results

${report.tables}

![throughput, p50 and p99 against 1, 8 and 64 concurrent connections](bench.png)

## Where the time goes

- **A connection is the network plus the start of the program.** With no
  network at all, \`cat </dev/null\` takes ${f(cat, 2)} ms and \`sh -c cat\` ${f(sh, 2)} ms
  (hyperfine); with no program, the same connection through an event loop
  that echoes the request takes ${f(net, 2)} ms (p50). The idle turnaround of each
  server is made of those two and the server's own work: socket -W 4
  ${f(r.idle[w4].p50, 2)} ms${tcp >= 0 ? `, tcpserver ${f(r.idle[tcp].p50, 2)} ms` : ""} (p50).${idleBound}
  socket runs a plain command like \`cat\` without \`sh\`, as tcpserver does;
  socat's \`SYSTEM:\` forks itself and then \`sh\`, and is the slowest in every row.
- **A pool takes socket's own start off the path, not the program's.** A
  worker waits in \`accept()\`, so no socket process has to start for a
  connection, but \`cat\` still does, after the connection has arrived, as
  under tcpserver. Beating tcpserver by the issue's margins needs the
  program itself started before its connection arrives.
- **On ${CORES} cores, CPU per connection is the throughput.** At 8 concurrent
  connections the cores are busy, and the connections per second come out
  close to ${CORES} × 1000 ms divided by all the CPU a connection costs (the CPU
  table's last columns). Per connection, \`cat\` costs ${f(c[w4].programs, 3)} ms under
  socket -W 4${tcp >= 0 ? ` (${f(c[tcp].programs, 3)} ms under tcpserver, which forks itself too)` : ""}, the
  load generator ${f(c[w4].loadgen, 3)} ms, socket's own processes ${f(c[w4].server, 3)} ms${tcp >= 0 ? ` and
  tcpserver ${f(c[tcp].server, 3)} ms` : ""}. ${throughputBound}
- **Inside \`cat\`'s start.** perf, run by hand while writing this (not by
  the script), puts about a sixth of it in glibc's CPU-feature detection
  (\`init_cpu_features\`, \`handle_amd\`: \`cpuid\`, which traps to the
  hypervisor on this VM) and most of the rest in \`execve\`, the dynamic
  loader and page faults; \`cat\`'s own code is under 1 %.
- **socket's own ${f(c[w4].server, 3)} ms.** strace of a worker shows the whole path of
  a connection: \`accept4\` (blocking, in the worker), \`setsockopt\`
  (no receive timeout on the connection), \`getsockname\` and \`getpeername\`
  (the UCSPI variables), Bun's spawn (\`vfork\`; in the child 64
  \`rt_sigaction\` resets, 3 \`dup2\`, \`close_range\`, \`execve\`),
  \`pidfd_open\`, \`close\` of its own copy of the connection, then
  \`wait4\` when \`cat\` ends and \`accept4\` again. Nothing is copied and a
  fixed pool sends nothing to its master. Timed by hand with perf's
  syscall tracepoints (not by the script), idle connections: from
  \`accept4\` returning to \`cat\`'s \`execve\` done takes a worker about
  0.8 ms (0.2–0.35 ms of JavaScript before the \`vfork\`, 0.2–0.3 ms in the
  \`vfork\` child resetting signal handlers, 0.25–0.35 ms in \`execve\`),
  and tcpserver about 0.9 ms (its \`fork\`, then a search of PATH). The
  rest of a worker's CPU is Bun's event loop, with no single hot spot in
  perf.${w216 >= 0 ? ` socket -W 2:16 spends ${f(c[w216].server + c[w216].programs - c[w4].programs, 3)} ms per connection besides
  \`cat\`: its workers tell the master "busy" and "idle" over IPC for
  every connection, and every worker it adds under load is a Bun process
  starting up (its p99 at 8: ${f(r.loops[w216][8].p99, 1)} ms, socket -W 4's ${f(r.loops[w4][8].p99, 1)} ms).` : ""}
- **Bulk data is not copied.** A worker hands the connection itself to
  \`cat\` as stdin, stdout and stderr and closes its own descriptor, so
  ${TRANSFER_MB} MB pass between the load generator and \`cat\` exactly as under
  tcpserver: socket -W 4 ${f(mb(W4.name), 0)} MB/s${tcp >= 0 ? `, tcpserver ${f(mb("tcpserver"), 0)} MB/s` : ""} (median). \`cat\`
  does the same under both (strace -c, by hand: about 800 reads and 800
  writes of 128 KiB per 100 MB, nothing else), so what differs between
  them is how this 2-core machine schedules \`cat\` and the client; see the
  spread of the runs. A C client, tried by hand while writing this, got
  0.9 to 1.7 GB/s through either, so the 1 GB/s target sits inside this
  machine's run-to-run spread. With \`-c\` the copy loop puts the worker's event loop and two
  socket pairs (Bun's pipes to a child are UNIX socket pairs) in the path;
  each byte is copied four more times by the kernel and the worker becomes
  the busiest process: ${f(mb(W4_COPY.name), 0)} MB/s.
- **Memory.** A worker is a whole Bun process: ${f(m4.anonMean)} MB of its own heap
  and stacks (Pss_Anon), the same with 4 or 64 workers. The rest of its
  PSS is its share of about ${f(m4.fileMean * (m4.count + 1), 0)} MB of executable pages that every socket
  process of the pool maps; PSS splits them among the processes, so a
  worker carries ${f(m4.fileMean)} MB of them with 4 workers and ${f(m64.fileMean)} MB with 64. The
  8 MB target ${m4.workerMax <= 8 ? "holds" : "fails"} at 4 workers and ${m64.workerMax <= 8 ? "holds" : "fails"} at 64, while what one more
  worker really costs is its own ${f(m4.anonMean)} MB either way. Idle, a worker still wakes
  4 times a second (its \`accept()\` times out every 250 ms to look at
  messages and signals): ${f(m64.idleCpuPercent)} % of a core for 64 idle workers.
- **Launch.** socket -W 4 answers its first connection ${f(launch(W4.name), 0)} ms after launch
  (median): the master, a Bun process, starts and binds, then starts 4
  workers, each a Bun process too, on ${CORES} cores. socket -f, which starts
  no worker, takes ${f(launch("socket -f"), 0)} ms${tcp >= 0 ? `; tcpserver, a small C program, ${f(launch("tcpserver"), 1)} ms` : ""}.
`;
}

// --- the chart: a PNG drawn by hand (no packages), deflateSync + CRC32 ------------

type RGB = readonly [number, number, number];
const COLORS: RGB[] = [[31, 119, 180], [23, 190, 207], [148, 103, 189], [255, 127, 14], [44, 160, 44]];
const GREY: RGB = [150, 150, 150];
const LIGHT: RGB = [225, 225, 225];
const BLACK: RGB = [30, 30, 30];

// A 5×7 bitmap font, rows top to bottom. g, p, q and y start at the
// x-height and are drawn two rows lower, so their tails hang below the line.
const DESCENDERS = "gpqy";
const FONT: Record<string, string> = {
  "0": ".###. #...# #..## #.#.# ##..# #...# .###.", "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
  "2": ".###. #...# ....# ...#. ..#.. .#... #####", "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
  "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.", "5": "##### #.... ####. ....# ....# #...# .###.",
  "6": "..##. .#... #.... ####. #...# #...# .###.", "7": "##### ....# ...#. ..#.. .#... .#... .#...",
  "8": ".###. #...# #...# .###. #...# #...# .###.", "9": ".###. #...# #...# .#### ....# ...#. .##..",
  A: ".###. #...# #...# ##### #...# #...# #...#", B: "####. #...# #...# ####. #...# #...# ####.",
  C: ".###. #...# #.... #.... #.... #...# .###.", D: "###.. #..#. #...# #...# #...# #..#. ###..",
  E: "##### #.... #.... ####. #.... #.... #####", F: "##### #.... #.... ####. #.... #.... #....",
  G: ".###. #...# #.... #.### #...# #...# .####", H: "#...# #...# #...# ##### #...# #...# #...#",
  I: ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.", J: "..### ...#. ...#. ...#. ...#. #..#. .##..",
  K: "#...# #..#. #.#.. ##... #.#.. #..#. #...#", L: "#.... #.... #.... #.... #.... #.... #####",
  M: "#...# ##.## #.#.# #.#.# #...# #...# #...#", N: "#...# #...# ##..# #.#.# #..## #...# #...#",
  O: ".###. #...# #...# #...# #...# #...# .###.", P: "####. #...# #...# ####. #.... #.... #....",
  Q: ".###. #...# #...# #...# #.#.# #..#. .##.#", R: "####. #...# #...# ####. #.#.. #..#. #...#",
  S: ".#### #.... #.... .###. ....# ....# ####.", T: "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
  U: "#...# #...# #...# #...# #...# #...# .###.", V: "#...# #...# #...# #...# #...# .#.#. ..#..",
  W: "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.", X: "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
  Y: "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..", Z: "##### ....# ...#. ..#.. .#... #.... #####",
  a: "..... ..... .###. ....# .#### #...# .####", b: "#.... #.... #.##. ##..# #...# #...# ####.",
  c: "..... ..... .###. #.... #.... #...# .###.", d: "....# ....# .##.# #..## #...# #...# .####",
  e: "..... ..... .###. #...# ##### #.... .###.", f: "..##. .#..# .#... ###.. .#... .#... .#...",
  g: ".#### #...# #...# #...# .#### ....# .###.", h: "#.... #.... #.##. ##..# #...# #...# #...#",
  i: "..#.. ..... .##.. ..#.. ..#.. ..#.. .###.", j: "...#. ..... ..##. ...#. ...#. #..#. .##..",
  k: "#.... #.... #..#. #.#.. ##... #.#.. #..#.", l: ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
  m: "..... ..... ##.#. #.#.# #.#.# #...# #...#", n: "..... ..... #.##. ##..# #...# #...# #...#",
  o: "..... ..... .###. #...# #...# #...# .###.", p: "####. #...# #...# #...# ####. #.... #....",
  q: ".#### #...# #...# #...# .#### ....# ....#", r: "..... ..... #.##. ##..# #.... #.... #....",
  s: "..... ..... .###. #.... .###. ....# ####.", t: ".#... .#... ###.. .#... .#... .#..# ..##.",
  u: "..... ..... #...# #...# #...# #..## .##.#", v: "..... ..... #...# #...# #...# .#.#. ..#..",
  w: "..... ..... #...# #...# #.#.# #.#.# .#.#.", x: "..... ..... #...# .#.#. ..#.. .#.#. #...#",
  y: "#...# #...# #...# #...# .#### ....# .###.", z: "..... ..... ##### ...#. ..#.. .#... #####",
  " ": "..... ..... ..... ..... ..... ..... .....", ".": "..... ..... ..... ..... ..... .##.. .##..",
  ",": "..... ..... ..... ..... .##.. ..#.. .#...", ":": "..... .##.. .##.. ..... .##.. .##.. .....",
  "-": "..... ..... ..... ##### ..... ..... .....", "/": "..... ....# ...#. ..#.. .#... #.... .....",
  "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.", ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
  "=": "..... ..... ##### ..... ##### ..... .....", "%": "##... ##..# ...#. ..#.. .#... #..## ...##",
  "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....", "<": "...#. ..#.. .#... #.... .#... ..#.. ...#.",
};

class Canvas {
  readonly pixels: Uint8Array;
  constructor(
    readonly width: number,
    readonly height: number,
  ) {
    this.pixels = new Uint8Array(width * height * 3).fill(255);
  }

  rect(x: number, y: number, w: number, h: number, color: RGB): void {
    for (let yy = Math.max(0, Math.round(y)); yy < Math.min(this.height, Math.round(y + h)); yy++) {
      for (let xx = Math.max(0, Math.round(x)); xx < Math.min(this.width, Math.round(x + w)); xx++) {
        this.pixels.set(color, (yy * this.width + xx) * 3);
      }
    }
  }

  /** A line `thick` pixels wide; with `dash`, drawn `dash` pixels on, `dash` off. */
  line(x0: number, y0: number, x1: number, y1: number, color: RGB, thick = 1, dash = 0): void {
    const steps = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0)));
    for (let i = 0; i <= steps; i++) {
      if (dash && Math.floor(i / dash) % 2 === 1) continue;
      const x = x0 + ((x1 - x0) * i) / steps;
      const y = y0 + ((y1 - y0) * i) / steps;
      this.rect(x - thick / 2, y - thick / 2, thick, thick, color);
    }
  }

  dot(x: number, y: number, r: number, color: RGB): void {
    for (let dy = -r; dy <= r; dy++) for (let dx = -r; dx <= r; dx++) if (dx * dx + dy * dy <= r * r) this.rect(x + dx, y + dy, 1, 1, color);
  }

  /** Text in the 5×7 font, each font pixel `scale` pixels square; `align` is where x is. */
  text(x: number, y: number, s: string, color: RGB, scale = 2, align: "left" | "center" | "right" = "left"): void {
    const advance = 6 * scale;
    const width = s.length * advance - scale;
    let left = align === "left" ? x : align === "center" ? x - width / 2 : x - width;
    for (const ch of s) {
      const rows = (FONT[ch] ?? FONT[ch.toUpperCase()] ?? FONT["."]).split(" ");
      rows.forEach((row, ry) => {
        const top = y + (ry + (DESCENDERS.includes(ch) ? 2 : 0)) * scale;
        for (let rx = 0; rx < 5; rx++) if (row[rx] === "#") this.rect(left + rx * scale, top, scale, scale, color);
      });
      left += advance;
    }
  }

  png(): Uint8Array {
    const raw = new Uint8Array((this.width * 3 + 1) * this.height);
    for (let y = 0; y < this.height; y++) {
      // Each row starts with its filter type: 0, none.
      raw.set(this.pixels.subarray(y * this.width * 3, (y + 1) * this.width * 3), y * (this.width * 3 + 1) + 1);
    }
    const header = new Uint8Array(13);
    const view = new DataView(header.buffer);
    view.setUint32(0, this.width);
    view.setUint32(4, this.height);
    header.set([8, 2, 0, 0, 0], 8); // 8 bits per channel, RGB, deflate, no filter choice, no interlace
    const signature = [137, 80, 78, 71, 13, 10, 26, 10];
    return Buffer.concat([Buffer.from(signature), chunk("IHDR", header), chunk("IDAT", deflateSync(raw, { level: 9 })), chunk("IEND", new Uint8Array(0))]);
  }
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A PNG chunk: length, type, data, CRC of type and data. */
function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "latin1");
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** Round tick values for a linear axis from 0 to about `max`. */
function linearTicks(max: number): number[] {
  const raw = max / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw;
  return Array.from({ length: Math.ceil(max / step) + 1 }, (_, i) => i * step);
}

/** 1, 2, 5 × powers of ten covering [min, max]. */
function logTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(min)) - 1; e <= Math.ceil(Math.log10(max)); e++) for (const m of [1, 2, 5]) ticks.push(m * 10 ** e);
  // A little room below and above, so no point sits on the frame.
  const lo = ticks.filter((t) => t <= min * 0.8).pop() ?? ticks[0];
  const hi = ticks.find((t) => t >= max * 1.2) ?? ticks[ticks.length - 1];
  return ticks.filter((t) => t >= lo && t <= hi);
}

const label = (v: number) => (v >= 1000 ? `${v / 1000}K` : String(Number(v.toPrecision(3))));

/** Throughput (bars), p50 and p99 (lines, log scale) against 1, 8 and 64 concurrent connections. */
function chart(r: Results): Uint8Array {
  const canvas = new Canvas(1260, 520);
  const [top, bottom, panelW, gap, left0] = [70, 420, 340, 70, 70];
  canvas.text(630, 14, "socket benchmark: -p cat on 127.0.0.1, closed loop, one run", BLACK, 2, "center");

  const panels: { title: string; value: (s: Summary) => number; log: boolean }[] = [
    { title: "connections per second", value: (s) => s.perSecond, log: false },
    { title: "latency p50, ms (log scale)", value: (s) => s.p50, log: true },
    { title: "latency p99, ms (log scale)", value: (s) => s.p99, log: true },
  ];
  const catFloor = r.floor[1].ms;
  panels.forEach((panel, p) => {
    const x0 = left0 + p * (panelW + gap);
    const values = r.loops.flatMap((loops) => CONCURRENCY.map((c) => panel.value(loops[c]))).filter(Number.isFinite);
    if (panel.log) values.push(catFloor);
    const ticks = panel.log ? logTicks(Math.min(...values), Math.max(...values)) : linearTicks(Math.max(...values));
    const [lo, hi] = [ticks[0], ticks[ticks.length - 1]];
    const y = (v: number) =>
      panel.log
        ? bottom - ((Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo))) * (bottom - top)
        : bottom - ((v - lo) / (hi - lo)) * (bottom - top);
    canvas.text(x0 + panelW / 2, top - 26, panel.title, BLACK, 2, "center");
    for (const t of ticks) {
      canvas.line(x0, y(t), x0 + panelW, y(t), LIGHT);
      canvas.text(x0 - 6, y(t) - 5, label(t), BLACK, 2, "right");
    }
    canvas.line(x0, top, x0, bottom, BLACK, 2);
    canvas.line(x0, bottom, x0 + panelW, bottom, BLACK, 2);
    const slot = panelW / CONCURRENCY.length;
    const xOf = (i: number) => x0 + slot * (i + 0.5);
    CONCURRENCY.forEach((c, i) => canvas.text(xOf(i), bottom + 10, String(c), BLACK, 2, "center"));
    canvas.text(x0 + panelW / 2, bottom + 32, "concurrent connections", BLACK, 2, "center");
    if (!panel.log) {
      const barW = (slot * 0.8) / r.names.length;
      r.loops.forEach((loops, k) =>
        CONCURRENCY.forEach((c, i) => {
          const v = panel.value(loops[c]);
          const bx = xOf(i) - slot * 0.4 + k * barW;
          if (Number.isFinite(v)) canvas.rect(bx + 1, y(v), barW - 2, bottom - y(v), COLORS[k % COLORS.length]);
        }),
      );
      return;
    }
    canvas.line(x0, y(catFloor), x0 + panelW, y(catFloor), GREY, 2, 6);
    canvas.text(x0 + panelW - 4, y(catFloor) - 20, "start of cat alone", GREY, 2, "right");
    r.loops.forEach((loops, k) => {
      const color = COLORS[k % COLORS.length];
      const points = CONCURRENCY.map((c, i) => [xOf(i), y(panel.value(loops[c]))] as const).filter(([, py]) => Number.isFinite(py));
      points.slice(1).forEach(([px, py], i) => canvas.line(points[i][0], points[i][1], px, py, color, 3));
      for (const [px, py] of points) canvas.dot(px, py, 5, color);
    });
  });

  // The legend, one row under the panels.
  let lx = left0;
  r.names.forEach((name, k) => {
    canvas.rect(lx, 488, 18, 18, COLORS[k % COLORS.length]);
    canvas.text(lx + 26, 490, name, BLACK, 2);
    lx += 26 + name.length * 12 + 40;
  });
  return canvas.png();
}

// Servers die with the benchmark, whatever ends it.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    void stopAll().finally(() => {
      rmSync(scratch, { recursive: true, force: true });
      process.exit(130);
    });
  });
}
try {
  await main();
} finally {
  await stopAll();
  rmSync(scratch, { recursive: true, force: true });
}
