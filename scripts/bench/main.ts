// `npm run bench`: socket's prefork pool (plain, --prestart, -q) against
// socket -f (a process per connection), tcpserver and socat, all serving
// `cat` on 127.0.0.1; then the launchers' scenario (nginx → socket → a C
// CGI); idle pools; launch; floors. All in one run, each phase rotating
// through its contenders, because the machine is shared and noisy:
// compare ratios within a run, not absolute numbers across runs. Prints
// the tables, writes docs/BENCHMARKS.md, docs/bench.svg and the README's
// Benchmarks section, and the raw figures to docs/bench.json.
// BENCH_QUICK=1 (or --quick): short phases. `bun scripts/bench/render.ts`
// writes the documents again from docs/bench.json (after a change to the report).
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { BODY_COUNT, BODY_MB, CONCURRENCY, CORES, SETTINGS, IDLE_COUNT, LAUNCHER_COUNT, LAUNCHES, log, POST_KB, QUICK, TRANSFER_MB, TRANSFER_RUNS } from "./config.ts";
import { buildOf } from "./builds.ts";
import { cpuMethod } from "./cgroup.ts";
import { answers, BASELINE_COMMIT, BODY_SUFFIX, compilePrograms, gateways, launcherContenders, NGINX_ALONE, requestsRound, startNginx, type Nginx, type Programs } from "./launchers.ts";
import { bulkPayload, exchange, httpGet, httpPost, REQUEST, summarize, transfer } from "./loadgen.ts";
import { forkExec } from "./forkexec.ts";
import { machine } from "./machine.ts";
import { markdown } from "./markdown.ts";
import { accounted, bunSpawnMs, closedLoops, cpuSample, cpuSpent, floors, idlePool, oneAtATime, rotate, transfers, type Accounted } from "./measure.ts";
import { reloadScenario } from "./reload.ts";
import { RESULTS_JSON, writeDocuments } from "./report.ts";
import { startupScenario } from "./startup.ts";
import {
  connectionContenders,
  ECHO,
  echoes,
  idlePools,
  killGroup,
  prepare,
  start,
  stop,
  stopAll,
  transferOnlyContenders,
  unavailable,
  type Bench,
  type Contender,
  type Server,
} from "./scenarios.ts";
import type { BodyRow, ConnRow, LauncherRow, Results, TransferRow } from "./types.ts";

const bench = prepare();
let nginx: Nginx | undefined;

/** A contender's command line as the report shows it (the private copy is "socket", the port PORT). */
function commandLine(c: Contender, programs?: Programs): string {
  let line = c.argv(54321).map((a) => (/[\s"]/.test(a) ? `"${a}"` : a)).join(" ");
  if (programs) line = line.replaceAll(programs.wrapper, "WRAPPER").replaceAll(programs.cgi, "CGI");
  // The private copies: "socket", and another build's "socket-COMMIT".
  return line.replaceAll(`${bench.scratch}/`, "").replaceAll("54321", "PORT");
}

/** Starts what can run; the rest get the reason they were skipped. */
async function startAll(b: Bench, contenders: Contender[], notes: string[], ready: typeof echoes | null) {
  const servers = new Map<string, Server>();
  const skipped = new Map<string, string>();
  for (const c of contenders) {
    const why = unavailable(b, c);
    if (why) {
      skipped.set(c.name, why);
      continue;
    }
    try {
      servers.set(c.name, await start(c, ready, true));
    } catch (e) {
      skipped.set(c.name, `did not start: ${(e as Error).message}`);
      notes.push(`${c.name} did not start: ${(e as Error).message}`);
    }
  }
  return { servers, skipped };
}

async function connections(notes: string[]) {
  const contenders = connectionContenders(bench);
  const extra = transferOnlyContenders(bench);
  log(`starting ${[...contenders, ...extra].map((c) => c.name).join(", ")}`);
  const { servers, skipped } = await startAll(bench, [...contenders, ...extra], notes, echoes);
  const echo = await start(ECHO);
  const live = contenders.filter((c) => servers.has(c.name)).map((c) => servers.get(c.name)!);

  log(`idle turnaround: ${IDLE_COUNT} connections to each, one at a time`);
  const idle = (await oneAtATime([...live, echo].map((s) => () => exchange({ port: s.port }, REQUEST)), IDLE_COUNT)).map((run) => summarize([run]));
  const networkFloor = idle.pop()!;

  const loops = live.map((): Record<number, ReturnType<typeof summarize>> => ({}));
  const cpu8 = live.map(() => ({ server: 0, programs: 0, loadgen: 0 }));
  let elsewhere = 0;
  let loopSeconds = 0;
  for (const k of CONCURRENCY) {
    log(`closed loop at ${k}: rounds rotating through ${live.length} servers`);
    const result = await closedLoops(live, k);
    result.results.forEach((runs, i) => (loops[i][k] = summarize(runs)));
    elsewhere += result.elsewhereMs;
    loopSeconds += result.seconds;
    if (k === 8) {
      result.cpu.forEach((spent, i) => {
        const count = loops[i][8].count;
        cpu8[i] = { server: spent.server / count, programs: spent.programs / count, loadgen: spent.loadgen / count };
      });
    }
  }
  const conns: ConnRow[] = contenders.map((c) => {
    const i = live.findIndex((s) => s.name === c.name);
    const command = commandLine(c);
    return i < 0 ? { name: c.name, command, skipped: skipped.get(c.name) } : { name: c.name, command, idle: idle[i], loops: loops[i], cpu8: cpu8[i] };
  });

  log(`${TRANSFER_MB} MB through one connection, ${TRANSFER_RUNS} times each`);
  const payload = bulkPayload(TRANSFER_MB);
  // The pools with one worker per connection and the others; the growing pool adds nothing here.
  const transferContenders = [...contenders.slice(0, 3), ...extra, ...contenders.slice(3).filter((x) => x.name !== "socket -W 2:16")];
  const transferLive = transferContenders.filter((c) => servers.has(c.name)).map((c) => servers.get(c.name)!);
  // The first transfers of a process run slow (its buffers and code are new): warm up first.
  for (let i = 0; i < 2 && transferLive.length > 0; i++) await transfer(transferLive[0].port, payload);
  const measured = await transfers(transferLive, payload, TRANSFER_RUNS);
  const transferRows: TransferRow[] = transferContenders.map((c) => {
    const i = transferLive.findIndex((s) => s.name === c.name);
    return i < 0 ? { name: c.name, skipped: skipped.get(c.name), mbPerSecond: [], error: "" } : { name: c.name, ...measured[i] };
  });
  await stopAll();
  return { conns, transfers: transferRows, networkFloor, elsewherePercent: (100 * elsewhere) / (loopSeconds * 1000 * CORES) };
}

async function launchersScenario(notes: string[]): Promise<Results["launchers"]> {
  if (!Bun.which("nginx")) return { note: "nginx is not installed (run scripts/install-bench-deps.sh as root)" };
  const programs = compilePrograms(bench);
  if (typeof programs === "string") return { note: programs };
  const contenders = launcherContenders(bench, programs, buildOf(bench, BASELINE_COMMIT, process.env.BENCH_BASELINE));
  // The same gateways running the header-first CGI: only the 5 MB POSTs go to them.
  const bodyContenders = gateways(bench, programs.hashFirst, BODY_SUFFIX);
  log(`launchers: starting ${contenders.map((c) => c.name).join(", ")}, the gateways again with the header-first CGI, and nginx`);
  const { servers, skipped } = await startAll(bench, [...contenders, ...bodyContenders], notes, null);
  const live = contenders.filter((c) => servers.has(c.name));
  const liveBodies = bodyContenders.filter((c) => servers.has(c.name));
  try {
    nginx = await startNginx(
      bench,
      [...live, ...liveBodies].map((c) => ({ protocol: c.protocol, port: servers.get(c.name)!.port, script: c.script })),
    );
  } catch (e) {
    await stopAll();
    return { note: (e as Error).message };
  }
  const nginxPid = nginx.proc.pid;
  // Each contender must give the CGI's answer through nginx before it is measured.
  const targets: { name: string; port: number; root: Accounted }[] = [];
  for (const [i, c] of live.entries()) {
    const o = await answers(nginx.ports[i]);
    if (o.ok) targets.push({ name: c.name, port: nginx.ports[i], root: accounted(servers.get(c.name)!) });
    else {
      skipped.set(c.name, `no answer through nginx: ${o.error} (see ${nginx.dir}/error.log)`);
      notes.push(`${c.name}: no answer through nginx: ${o.error}`);
    }
  }
  // nginx is measured apart (nginxCpu), as every target's front.
  targets.push({ name: NGINX_ALONE, port: nginx.ports[nginx.ports.length - 1], root: { pid: nginxPid } });

  log(`launchers: ${LAUNCHER_COUNT} GETs and ${LAUNCHER_COUNT} POSTs of ${POST_KB} KiB one at a time to each`);
  const small = crypto.getRandomValues(new Uint8Array(POST_KB * 1024));
  const probes = [...targets.map((t) => () => httpGet(t.port)), ...targets.map((t) => () => httpPost(t.port, small))];
  const both = (await oneAtATime(probes, LAUNCHER_COUNT)).map((run) => summarize([run]));
  const one = both.slice(0, targets.length);
  const post = both.slice(targets.length);
  log(`launchers: 8 at a time, rounds rotating through ${targets.length}`);
  const nginxCpu = targets.map(() => 0);
  const rounds = await rotate(targets.map((t) => t.root), async (k) => {
    const before = cpuSample(nginxPid);
    const result = await requestsRound(targets[k].port);
    nginxCpu[k] += cpuSpent(before, cpuSample(nginxPid)).server;
    return result;
  });
  const rows: LauncherRow[] = [...contenders, { name: NGINX_ALONE, argv: () => [] }].map((c) => {
    const i = targets.findIndex((t) => t.name === c.name);
    const command = c.name === NGINX_ALONE ? 'nginx: return 200 "hello\\n"' : commandLine(c, programs);
    if (i < 0) return { name: c.name, command, skipped: skipped.get(c.name) };
    const all = rounds.results[i];
    const at8 = {
      requests: all.reduce((s, x) => s + x.requests, 0),
      seconds: all.reduce((s, x) => s + x.seconds, 0),
      failures: all.reduce((s, x) => s + x.failures, 0),
      firstError: all.find((x) => x.firstError)?.firstError ?? "",
    };
    const per = Math.max(1, at8.requests);
    const cpu = rounds.cpu[i];
    return {
      name: c.name,
      command,
      one: one[i],
      post: post[i],
      at8,
      cpu8: c.name === NGINX_ALONE ? { server: NaN, programs: NaN, nginx: nginxCpu[i] / per } : { server: cpu.server / per, programs: cpu.programs / per, nginx: nginxCpu[i] / per },
    };
  });
  const bodies: BodyRow[] = [];
  for (const c of bodyContenders) {
    const k = liveBodies.indexOf(c);
    if (k < 0) bodies.push({ name: c.name, skipped: skipped.get(c.name), intact: 0, of: 0, error: "" });
    else {
      log(`launchers: ${BODY_COUNT} POSTs of ${BODY_MB} MB to ${c.name}`);
      bodies.push({ name: c.name, ...(await intactPosts(nginx.ports[live.length + k])) });
    }
  }
  await killGroup(nginx.proc);
  nginx = undefined;
  await stopAll();
  return { rows, bodies };
}

/**
 * BODY_COUNT POSTs of BODY_MB MB one after another, each answer checked
 * against the body's sha256; stops at the first timeout (a lost body waits
 * out nginx's 60 s read timeout, so 20 of them would take 20 minutes).
 */
async function intactPosts(port: number): Promise<Omit<BodyRow, "name">> {
  const body = bulkPayload(BODY_MB);
  const expect = `${createHash("sha256").update(body).digest("hex")}  -\n`;
  // Ready (uWSGI's workers come up after its socket): a small POST answered with its hash.
  const tiny = new TextEncoder().encode("ready?");
  const tinyHash = `${createHash("sha256").update(tiny).digest("hex")}  -\n`;
  const until = performance.now() + 15_000;
  while (!(await httpPost(port, tiny, tinyHash, 2000)).ok && performance.now() < until) await Bun.sleep(50);
  let intact = 0;
  let of = 0;
  let error = "";
  while (of < BODY_COUNT) {
    const o = await httpPost(port, body, expect, 15_000);
    of++;
    if (o.ok) intact++;
    else error ||= o.error;
    if (o.error === "timeout") break;
  }
  return { intact, of, error };
}

/**
 * BENCH_ONLY=launchers (a comma-separated list of connections, launchers,
 * reload, pools, launches, floors, startup): only those phases, printed, no document written.
 */
const ONLY = process.env.BENCH_ONLY?.split(",").map((x) => x.trim());
const runs = (phase: string) => !ONLY || ONLY.includes(phase);

async function main(): Promise<void> {
  const began = performance.now();
  const notes: string[] = [];
  log(`this build's options among those being added: ${[...bench.features].join(", ") || "none"}`);
  const cpu = cpuMethod();
  if (cpu.why) notes.push(`CPU from /proc alone (fcgiwrap's CGIs, reaped by the kernel, count nowhere): ${cpu.why}.`);
  if (!Bun.which("hyperfine")) notes.push("hyperfine is not installed: the floor was timed with Bun.spawnSync instead.");

  const c = runs("connections")
    ? await connections(notes)
    : { conns: [], transfers: [], networkFloor: summarize([{ outcomes: [], seconds: 0 }]), elsewherePercent: NaN };
  const launchers = runs("launchers") ? await launchersScenario(notes) : { note: "not run (BENCH_ONLY)" };
  if (launchers.note) notes.push(`launchers' scenario skipped: ${launchers.note}`);

  const reload = runs("reload") ? await reloadScenario(bench) : { note: "not run (BENCH_ONLY)" };
  if (reload.note) notes.push(`reload scenario skipped: ${reload.note}`);

  if (runs("pools")) log("idle pools, each alone");
  const pools: Results["pools"] = [];
  for (const p of runs("pools") ? idlePools(bench) : []) {
    const why = unavailable(bench, p);
    if (why) pools.push({ name: p.name, skipped: why });
    else pools.push({ name: p.name, result: await idlePool(p, Number(p.name.match(/-W (\d+)/)![1])) });
  }

  if (runs("launches")) log(`launch to first answered connection, ${LAUNCHES} launches each`);
  const launchContenders = connectionContenders(bench).filter((x) => ["socket -W 4", "socket -W 4 --prestart", "socket -f", "tcpserver", "socat"].includes(x.name) && !unavailable(bench, x));
  const launches = launchContenders.map((): number[] => []);
  for (let i = 0; i < (runs("launches") ? LAUNCHES : 0); i++) {
    for (const [k, x] of launchContenders.entries()) {
      const server = await start(x);
      launches[k].push(server.readyMs);
      await stop(server);
    }
  }

  const startup = runs("startup") ? await startupScenario(bench) : { note: "not run (BENCH_ONLY)" };
  if (startup.note) notes.push(`startup against the previous build skipped: ${startup.note}`);

  if (runs("floors")) log("the floor: starting programs with no network");
  const cgi = join(bench.scratch, "hello-cgi");
  const floorCommands = [
    { name: "sh -c cat", argv: ["sh", "-c", "cat"] },
    { name: "cat", argv: ["cat"] },
    ...(Bun.which(cgi) ? [{ name: "hello-cgi", argv: [cgi] }] : []),
  ];
  const floor = runs("floors") ? floors(bench.scratch, floorCommands) : [];
  const spawnMs = runs("floors") ? await bunSpawnMs() : NaN;

  const results: Results = {
    settings: SETTINGS,
    machine: machine(),
    date: new Date().toISOString().slice(0, 16).replace("T", " "),
    quick: QUICK,
    cores: CORES,
    features: [...bench.features],
    conns: c.conns,
    elsewherePercent: c.elsewherePercent,
    transfers: c.transfers,
    pools,
    launches: launchContenders.map((x, k) => ({ name: x.name, ms: launches[k].sort((a, b) => a - b) })),
    floor,
    spawnMs,
    forkExec: forkExec(bench),
    networkFloor: c.networkFloor,
    launchers,
    reload,
    startup,
    cpuMethod: cpu,
    notes,
    seconds: (performance.now() - began) / 1000,
  };
  if (ONLY) {
    // A partial run: printed, the documents left as they are.
    const doc = markdown(results);
    console.log(doc.slice(doc.indexOf("## Results"), doc.indexOf("## What each change bought")));
    return;
  }
  writeFileSync(RESULTS_JSON, `${JSON.stringify(results, null, 1)}\n`);
  const doc = writeDocuments(results);
  console.log(doc.slice(doc.indexOf("## Results"), doc.indexOf("## What each change bought")));
  log(`wrote docs/BENCHMARKS.md, docs/bench.svg, docs/bench.json and the README's Benchmarks section; the run took ${Math.round(results.seconds)} s`);
}


async function cleanUp(): Promise<void> {
  if (nginx) await killGroup(nginx.proc);
  await stopAll();
  rmSync(bench.scratch, { recursive: true, force: true });
}

// Servers and nginx die with the benchmark, whatever ends it.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => void cleanUp().finally(() => process.exit(130)));
}
try {
  await main();
} finally {
  await cleanUp();
}
