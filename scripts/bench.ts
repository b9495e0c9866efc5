// `npm run bench`: socket's pool against socket -f, tcpserver and socat, all
// in one run on this machine (it is shared and noisy: compare ratios within
// a run, not absolute times across runs). Writes a table to stdout,
// docs/BENCHMARKS.md and, when gnuplot is installed, docs/bench.png.
// BENCH_QUICK=1 makes every phase short, for trying the script out.
import { readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { closedLoop, exchange, idleTurnaround, percentile, transfer, type Summary } from "./loadgen.ts";

const ROOT = join(import.meta.dir, "..");
const SOCKET = join(ROOT, "dist", "socket");
const QUICK = process.env.BENCH_QUICK === "1";
const PHASE_S = QUICK ? 1 : 5;
const IDLE_COUNT = QUICK ? 50 : 200;
const IDLE_PAUSE_MS = 10;
const TRANSFER_MB = QUICK ? 20 : 100;
const CONCURRENCY = [1, 8, 64];

type Command = (port: number) => string[];

interface Contender {
  name: string;
  command: Command;
  /** A program from Debian that must be installed (scripts/install-bench-deps.sh). */
  needs?: string;
}

const pool = (spec: string, extra: string[] = []): Command => (p) =>
  [SOCKET, ...extra, "-p", "cat", "-W", spec, "-B", "127.0.0.1", "-s", String(p)];

const contenders: Contender[] = [
  { name: "socket -W 4", command: pool("4") },
  { name: "socket -W 2:16", command: pool("2:16") },
  { name: "socket -f", command: (p) => [SOCKET, "-s", "-l", "-f", "-p", "cat", "-B", "127.0.0.1", String(p)] },
  { name: "tcpserver", needs: "tcpserver", command: (p) => ["tcpserver", "-RHl0", "-b", "256", "-c", "64", "127.0.0.1", String(p), "cat"] },
  {
    name: "socat",
    needs: "socat",
    command: (p) => ["socat", `TCP-LISTEN:${p},bind=127.0.0.1,fork,reuseaddr,backlog=256`, "SYSTEM:cat"],
  },
];

function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

interface Running {
  pid: number;
  port: number;
  /** Launch to the first answered connection. */
  readyMs: number;
  stop(): Promise<void>;
}

/** Starts a server in its own process group, so stopping it ends its workers and programs too. */
async function start(command: Command): Promise<Running> {
  const port = freePort();
  const argv = command(port);
  const started = performance.now();
  const proc = Bun.spawn(argv, { stdio: ["ignore", "ignore", "ignore"], detached: true });
  const stop = async () => {
    try {
      process.kill(-proc.pid, "SIGKILL");
    } catch {
      // already gone
    }
    await proc.exited;
  };
  const ping = new TextEncoder().encode("ready?"); // no LF: -c would echo it as CRLF
  while (!(await exchange({ port }, ping, 1000)).ok) {
    if (performance.now() - started > 10_000 || proc.exitCode !== null) {
      await stop();
      throw new Error(`${argv.join(" ")} did not answer`);
    }
    await Bun.sleep(1);
  }
  return { pid: proc.pid, port, readyMs: performance.now() - started, stop };
}

async function withServer<T>(command: Command, body: (server: Running) => Promise<T>): Promise<T> {
  const server = await start(command);
  try {
    return await body(server);
  } finally {
    await server.stop();
  }
}

/** Proportional set size in MB: shared pages are split among the processes that map them. */
function pssMB(pid: number): number {
  const kb = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8").match(/^Pss:\s+(\d+)/m)?.[1];
  return Number(kb) / 1024;
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** The time to start the program alone, no network: the floor under every contender. */
function floorMs(argv: string[], runs: number): number {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    Bun.spawnSync(argv, { stdio: ["ignore", "ignore", "ignore"] });
    times.push(performance.now() - t);
  }
  return percentile(times.sort((a, b) => a - b), 50);
}

const f = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "–");
const mark = (ok: boolean) => (ok ? "PASS" : "FAIL");

interface Row {
  name: string;
  idle: Summary;
  loops: Record<number, Summary>;
}

async function main(): Promise<void> {
  const available = contenders.filter((c) => !c.needs || Bun.which(c.needs));
  const skipped = contenders.filter((c) => c.needs && !Bun.which(c.needs));
  const notes: string[] = skipped.map((c) => `${c.name} skipped: not installed (run scripts/install-bench-deps.sh)`);
  const log = (line: string) => console.error(`bench: ${line}`);

  const rows: Row[] = [];
  for (const contender of available) {
    log(`${contender.name}: idle turnaround and closed loops`);
    rows.push(
      await withServer(contender.command, async (server) => {
        const idle = await idleTurnaround({ port: server.port }, IDLE_COUNT, IDLE_PAUSE_MS);
        const loops: Record<number, Summary> = {};
        for (const c of CONCURRENCY) loops[c] = await closedLoop({ port: server.port }, c, PHASE_S);
        return { name: contender.name, idle, loops };
      }),
    );
  }

  log("transfers");
  const transfers: { name: string; ok: boolean; mbPerSecond: number }[] = [];
  const transferContenders: [string, Command][] = [
    ["socket -W 4 (no copy)", pool("4")],
    ["socket -W 4 -c (copy loop)", pool("4", ["-c"])],
    ...available.filter((c) => !c.name.startsWith("socket")).map((c): [string, Command] => [c.name, c.command]),
  ];
  for (const [name, command] of transferContenders) {
    transfers.push({ name, ...(await withServer(command, (s) => transfer({ port: s.port }, TRANSFER_MB))) });
  }

  log("idle memory and start-up");
  const memory: { name: string; master: number; worker: number }[] = [];
  for (const workers of [4, 64]) {
    memory.push(
      await withServer(pool(String(workers)), async (server) => {
        // Every worker started and settled: the first answer came from the first one ready.
        const until = performance.now() + 20_000;
        while (childrenOf(server.pid).length < workers && performance.now() < until) await Bun.sleep(50);
        await Bun.sleep(1000);
        const ws = childrenOf(server.pid);
        const mean = ws.reduce((sum, pid) => sum + pssMB(pid), 0) / ws.length;
        return { name: `socket -W ${workers} (${ws.length} workers)`, master: pssMB(server.pid), worker: mean };
      }),
    );
  }
  const launches: { name: string; ms: number }[] = [];
  for (const contender of available.filter((c) => c.name !== "socket -W 2:16")) {
    const times: number[] = [];
    for (let i = 0; i < 5; i++) times.push(await withServer(contender.command, async (s) => s.readyMs));
    launches.push({ name: contender.name, ms: percentile(times.sort((a, b) => a - b), 50) });
  }
  const floors = {
    sh: floorMs(["sh", "-c", "cat </dev/null"], 100),
    cat: floorMs(["sh", "-c", "exec cat </dev/null"], 100),
  };

  // --- the tables ---------------------------------------------------------
  const out: string[] = [];
  out.push("| server | idle p50 ms | idle p99 ms | " + CONCURRENCY.map((c) => `c=${c} conn/s | c=${c} p50 | c=${c} p99 | c=${c} fail`).join(" | ") + " |");
  out.push("|" + " --- |".repeat(3 + CONCURRENCY.length * 4));
  for (const r of rows) {
    const cells = CONCURRENCY.flatMap((c) => [f(r.loops[c].perSecond, 0), f(r.loops[c].p50), f(r.loops[c].p99), String(r.loops[c].failures)]);
    out.push(`| ${r.name} | ${f(r.idle.p50)} | ${f(r.idle.p99)} | ${cells.join(" | ")} |`);
  }
  out.push("", `Floor, no network: \`sh -c 'cat </dev/null'\` ${f(floors.sh)} ms, \`cat </dev/null\` (exec'd by sh) ${f(floors.cat)} ms (p50 of 100, including Bun's spawn).`);
  out.push("", "| 1 connection, echo through cat | MB/s | ok |", "| --- | --- | --- |");
  for (const t of transfers) out.push(`| ${t.name}, ${TRANSFER_MB} MB | ${f(t.mbPerSecond, 0)} | ${t.ok ? "yes" : "NO"} |`);
  out.push("", "| idle pool | master PSS MB | PSS MB per worker |", "| --- | --- | --- |");
  for (const m of memory) out.push(`| ${m.name} | ${f(m.master, 1)} | ${f(m.worker, 1)} |`);
  out.push("", "| launch to first answered connection | ms (median of 5) |", "| --- | --- |");
  for (const l of launches) out.push(`| ${l.name} | ${f(l.ms, 1)} |`);

  // --- the targets, as ratios within this run ----------------------
  const w4 = rows.find((r) => r.name === "socket -W 4")!;
  const tcp = rows.find((r) => r.name === "tcpserver");
  const noCopy = transfers.find((t) => t.name.includes("no copy"))!;
  const copy = transfers.find((t) => t.name.includes("copy loop"))!;
  const targets: [string, string, boolean][] = [];
  if (tcp) {
    const idleRatio = w4.idle.p50 / tcp.idle.p50;
    targets.push(["idle turnaround p50 ≤ 0.7 × tcpserver", `${f(idleRatio)} ×`, idleRatio <= 0.7]);
    const tputRatio = w4.loops[8].perSecond / tcp.loops[8].perSecond;
    targets.push(["throughput at 8 ≥ 1.5 × tcpserver", `${f(tputRatio)} ×`, tputRatio >= 1.5]);
  }
  const at64 = w4.loops[64];
  targets.push(["at 64: no failed connection", `${at64.failures} failed`, at64.failures === 0]);
  targets.push(["at 64: p99 < 3 × p50", `${f(at64.p99 / at64.p50)} ×`, at64.p99 < 3 * at64.p50]);
  targets.push(["100 MB through cat, no copy ≥ 1 GB/s", `${f(noCopy.mbPerSecond, 0)} MB/s`, noCopy.ok && noCopy.mbPerSecond >= 1000]);
  targets.push(["100 MB through cat, copy loop ≥ 300 MB/s", `${f(copy.mbPerSecond, 0)} MB/s`, copy.ok && copy.mbPerSecond >= 300]);
  for (const m of memory) targets.push([`idle worker PSS ≤ 8 MB, ${m.name}`, `${f(m.worker, 1)} MB`, m.worker <= 8]);
  const w4Launch = launches.find((l) => l.name === "socket -W 4")!;
  targets.push(["first connection within 200 ms of launch, -W 4", `${f(w4Launch.ms, 1)} ms`, w4Launch.ms <= 200]);
  out.push("", "| target (socket -W 4 unless said) | this run | |", "| --- | --- | --- |");
  for (const [what, value, ok] of targets) out.push(`| ${what} | ${value} | ${mark(ok)} |`);
  if (notes.length) out.push("", ...notes.map((n) => `Note: ${n}`));

  const table = out.join("\n");
  console.log(table);
  writeReport(table);
  plot(rows);
}

function machine(): string {
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  const kernel = readFileSync("/proc/sys/kernel/osrelease", "utf8").trim();
  return `${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${kernel}, Bun ${Bun.version}`;
}

function writeReport(table: string): void {
  const marker = "<!-- generated -->";
  const path = join(ROOT, "docs", "BENCHMARKS.md");
  let handWritten = "";
  try {
    handWritten = readFileSync(path, "utf8").split(marker)[1] ?? "";
  } catch {
    // first run
  }
  const generated = [
    "# Benchmarks",
    "",
    `Made by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)}: ${machine()}.`,
    `Every contender runs \`cat\` per connection on 127.0.0.1 TCP; the load generator (scripts/loadgen.ts) is one Bun process; each connection sends, half-closes, reads to EOF and checks the reply byte for byte. Idle: ${IDLE_COUNT} connections one at a time, ${IDLE_PAUSE_MS} ms apart. Closed loops: ${PHASE_S} s each. This machine is shared and noisy: compare within a run.`,
    "",
    table,
    "",
    "![latency and throughput against concurrency](bench.png)",
    "",
  ].join("\n");
  writeFileSync(path, `${generated}${marker}${handWritten || "\n"}`);
}

/** The chart, through gnuplot when it is installed (scripts/install-bench-deps.sh). */
function plot(rows: Row[]): void {
  if (!Bun.which("gnuplot")) {
    console.error("bench: gnuplot not installed, no chart (run scripts/install-bench-deps.sh)");
    return;
  }
  const data = rows
    .map((r, i) => `# ${r.name}\n` + CONCURRENCY.map((c) => `${c} ${r.loops[c].perSecond} ${r.loops[c].p50} ${r.loops[c].p99}`).join("\n") + (i < rows.length - 1 ? "\n\n\n" : "\n"))
    .join("");
  const dataPath = join(ROOT, "docs", "bench.dat");
  writeFileSync(dataPath, data);
  const series = (column: string) =>
    rows.map((r, i) => `'${dataPath}' index ${i} using 1:${column} with linespoints lw 2 title '${r.name}'`).join(", ");
  const script = [
    `set terminal png size 1100,450 font ',10'`,
    `set output '${join(ROOT, "docs", "bench.png")}'`,
    "set multiplot layout 1,2",
    "set logscale x 2",
    "set xrange [0.8:90]",
    "set xtics (1, 8, 64)",
    "set xlabel 'concurrent connections'",
    "set key top left",
    "set grid",
    "set title 'throughput (connections/s, higher is better)'",
    `plot ${series("2")}`,
    "set title 'latency p50 (ms, lower is better)'",
    "set logscale y",
    `plot ${series("3")}`,
    "unset multiplot",
  ].join("\n");
  const result = Bun.spawnSync(["gnuplot"], { stdin: new Blob([script]), stderr: "pipe" });
  if (result.exitCode !== 0) console.error(`bench: gnuplot failed: ${result.stderr.toString()}`);
  Bun.spawnSync(["rm", "-f", dataPath]);
}

await main();
