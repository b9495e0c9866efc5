// The targets of issues 4, 8, 9, 11 and 17, each judged from ratios within the
// one run (the machine is shared, so absolute figures mean little across
// runs): met, not met with the measured reason, or not supported by the
// build measured. Add a target here; the markdown and the README count them.
import { f, ratio } from "./format.ts";
import { BODY_COUNT, BODY_MB } from "./config.ts";
import { forkExecText } from "./forkexec.ts";
import { BASELINE_COMMIT, BASELINE_SUFFIX, BODY_SUFFIX, F_Q, FASTCGI, FCGIWRAP, NGINX_ALONE, SCGI, UWSGI, W4_NO_Q, W4_Q as L_W4_Q, W4_Q_PRESTART } from "./launchers.ts";
import { median } from "./loadgen.ts";
import { conn, gatewayCpu, launcher, mbps, pool, rps, why } from "./lookups.ts";
import { NOT_SUPPORTED, TCPSERVER, W4, W4_COPY, W4_PRESTART, W4_TIMEOUT } from "./scenarios.ts";
import { launchMedian, startupPair } from "./startup.ts";
import type { Results, Target } from "./types.ts";

/** A missing row's status: the build lacks the option, or the row was not measured (a tool not installed, a failure). */
const unsupported = (s: string | undefined) => (s?.startsWith(NOT_SUPPORTED) ? NOT_SUPPORTED : "not measured");

/** A ratio target: met when `value op goal`; a missing side makes it unsupported or unmeasured. */
function ratioTarget(
  issue: number,
  what: string,
  value: number,
  goal: number,
  atLeast: boolean,
  missing: string | undefined,
  reason: () => string,
  detail = "",
): Target {
  if (!Number.isFinite(value)) return { issue, what, value: missing ?? "not measured", status: unsupported(missing) };
  const met = atLeast ? value >= goal : value <= goal;
  return { issue, what, value: `${f(value, 2)} ×${detail ? ` (${detail})` : ""}`, status: met ? "met" : "not met", reason: met ? undefined : reason() };
}

/** Every target, in the order the Targets table lists them. */
export function targets(r: Results): Target[] {
  const out: Target[] = [];
  const w4 = conn(r, W4);
  const tcp = conn(r, TCPSERVER);
  const pre = conn(r, W4_PRESTART);
  const net = r.networkFloor.p50;
  const missingTcp = tcp ? undefined : why(r, TCPSERVER);

  // Issue 4, kept so that a change that loses ground shows.
  out.push(
    ratioTarget(4, "idle turnaround p50 ≤ 0.7 × tcpserver's (-W 4)", ratio(w4?.idle?.p50, tcp?.idle?.p50), 0.7, false, missingTcp, () =>
      `both start \`cat\` after the connection arrives; \`cat\` alone takes ${f(r.floor.find((x) => x.name.startsWith("`cat "))?.ms, 2)} ms`,
    ),
  );
  out.push(
    ratioTarget(4, "throughput at 8 ≥ 1.5 × tcpserver's (-W 4)", ratio(w4?.loops?.[8].perSecond, tcp?.loops?.[8].perSecond), 1.5, true, missingTcp, () => {
      const c = w4!.cpu8!;
      const free = (r.cores * 1000) / (c.programs + c.loadgen);
      return `\`cat\` and the load generator alone cost ${f(c.programs + c.loadgen, 3)} ms CPU per connection: at most ${f(free / tcp!.loops![8].perSecond, 2)} × with a server costing nothing`;
    }),
  );
  if (w4?.loops) {
    const c64 = w4.loops[64];
    out.push({ issue: 4, what: "at 64: no failed connection (-W 4)", value: `${c64.failures} of ${c64.count} failed`, status: c64.failures === 0 ? "met" : "not met", reason: c64.firstError || undefined });
    const tcp64 = tcp?.loops?.[64];
    out.push({
      issue: 4,
      what: "at 64: p99 < 3 × p50 (-W 4)",
      value: `${f(c64.p99 / c64.p50, 2)} ×`,
      status: c64.p99 < 3 * c64.p50 ? "met" : "not met",
      reason: `tcpserver's at 64: ${f(tcp64 ? tcp64.p99 / tcp64.p50 : NaN, 2)} ×; other processes used ${f(r.elsewherePercent, 0)} % of the machine during the closed loops`,
    });
  }
  const mbW4 = mbps(r, W4);
  const mbCopy = mbps(r, W4_COPY);
  out.push({
    issue: 4,
    what: `${r.settings.transferMb} MB through cat ≥ 1 GB/s, no copy (-W 4)`,
    value: `${f(mbW4, 0)} MB/s`,
    status: (mbW4 ?? 0) >= 1024 ? "met" : "not met",
    reason: (mbW4 ?? 0) >= 1024 ? undefined : `tcpserver, which copies nothing either: ${f(mbps(r, TCPSERVER), 0)} MB/s (this machine's loopback echo through \`cat\`)`,
  });
  out.push({ issue: 4, what: `${r.settings.transferMb} MB through cat ≥ 300 MB/s, copy loop (-c)`, value: `${f(mbCopy, 0)} MB/s`, status: (mbCopy ?? 0) >= 300 ? "met" : "not met" });
  for (const name of ["socket -W 4", "socket -W 64"]) {
    const m = pool(r, name);
    if (!m) continue;
    out.push({
      issue: 4,
      what: `idle worker PSS ≤ 8 MB, ${name}`,
      value: `${f(m.workerMean)} MB (max ${f(m.workerMax)})`,
      status: m.workerMax <= 8 ? "met" : "not met",
      reason: m.workerMax <= 8 ? undefined : `own heap ${f(m.anonMean)} MB; the rest is its share of the executable's pages, split among only ${m.count + 1} processes`,
    });
  }
  const launch = r.launches.find((l) => l.name === W4)?.ms ?? [];
  const worst = launch[launch.length - 1];
  out.push({
    issue: 4,
    what: "first connection answered ≤ 200 ms after launch (-W 4, worst launch)",
    value: `${f(worst)} ms`,
    status: worst <= 200 ? "met" : "not met",
    reason: `median ${f(median(launch))} ms of ${launch.length} launches: the master and 4 workers are Bun processes starting on ${r.cores} cores`,
  });

  // Issue 8.
  out.push(
    ratioTarget(8, "`-p cat -W 4 --prestart`: idle turnaround p50 ≤ 0.4 × tcpserver's", ratio(pre?.idle?.p50, tcp?.idle?.p50), 0.4, false, pre ? missingTcp : why(r, W4_PRESTART), () =>
      `the network alone (no program, a Bun echo server) takes ${f(net, 2)} ms = ${f(net / tcp!.idle!.p50, 2)} × tcpserver's p50; --prestart adds ${f(pre!.idle!.p50 - net, 2)} ms to it`,
    ),
  );
  const fq = launcher(r, F_Q);
  const lpre = launcher(r, W4_Q_PRESTART);
  const lq = launcher(r, L_W4_Q);
  const lnoq = launcher(r, W4_NO_Q);
  const nginxAlone = launcher(r, NGINX_ALONE);
  out.push(
    ratioTarget(8, "launchers, one at a time: `-W 4 -q --prestart` p50 ≤ 0.75 × `-f -q`", ratio(lpre?.one?.p50, fq?.one?.p50), 0.75, false, lpre ? why(r, F_Q) : why(r, W4_Q_PRESTART), () =>
      `nginx answering by itself takes ${f(nginxAlone?.one?.p50, 2)} ms; the rest of \`-f -q\`'s ${f(fq!.one!.p50, 2)} ms is the upstream connection, the wrapper's and the CGI's exec`,
      `${f(lpre?.one?.p50, 2)} vs ${f(fq?.one?.p50, 2)} ms`),
  );
  out.push(
    ratioTarget(8, "launchers, 8 at a time: `-W 4 -q` requests/s ≥ 0.95 × without -q", ratio(rps(lq), rps(lnoq)), 0.95, true, lq ? why(r, W4_NO_Q) : why(r, L_W4_Q), () =>
      `with -q, socket's own processes spend ${f(lq!.cpu8?.server, 3)} ms CPU per request, without ${f(lnoq!.cpu8?.server, 3)} ms`,
      `${f(rps(lq), 0)} vs ${f(rps(lnoq), 0)} req/s`),
  );
  out.push(
    ratioTarget(8, "`--prestart` connections/s at 8 ≥ 0.8 × the hand-off (-W 4)", ratio(pre?.loops?.[8].perSecond, w4?.loops?.[8].perSecond), 0.8, true, why(r, W4_PRESTART), () =>
      `socket's processes spend ${f(pre!.cpu8?.server, 3)} ms CPU per connection with --prestart, ${f(w4!.cpu8?.server, 3)} ms without`,
      `${f(pre?.loops?.[8].perSecond, 0)} vs ${f(w4?.loops?.[8].perSecond, 0)} conn/s; socket's CPU per connection ${f(pre?.cpu8?.server, 3)} vs ${f(w4?.cpu8?.server, 3)} ms`,
    ),
  );
  out.push(
    ratioTarget(8, `\`--prestart\` ${r.settings.transferMb} MB ≥ 0.8 × the hand-off (-W 4)`, ratio(mbps(r, W4_PRESTART), mbW4), 0.8, true, why(r, W4_PRESTART), () =>
      `splice(2) through two pipes puts the worker in the path of every byte, a third busy process beside the client and \`cat\` on 2 cores; 256 KiB pipes instead of 64 KiB took it from 0.70 to 0.80 × in a 4-round test (1 MiB: 0.81 ×); the copy loop (-c) moves ${f(mbCopy, 0)} MB/s`,
      `${f(mbps(r, W4_PRESTART), 0)} vs ${f(mbW4, 0)} MB/s`,
    ),
  );
  const p64 = pool(r, "socket -W 64");
  if (p64) {
    out.push({
      issue: 8,
      what: "64 idle workers: under 0.5 % of a core",
      value: `${f(p64.idleCpuPercent, 2)} % over ${r.settings.idleCpuS} s`,
      status: p64.idleCpuPercent < 0.5 ? "met" : "not met",
      reason: p64.idleCpuPercent < 0.5 ? undefined : `a worker's main thread wakes ${f(p64.wakeupsPerSecond, 1)} times a second`,
    });
  }
  const p64pre = pool(r, "socket -W 64 --prestart");
  out.push(
    p64pre
      ? { issue: 8, what: "64 idle workers with --prestart: under 0.5 % of a core", value: `${f(p64pre.idleCpuPercent, 2)} %`, status: p64pre.idleCpuPercent < 0.5 ? "met" : "not met", reason: p64pre.idleCpuPercent < 0.5 ? undefined : `a worker's main thread wakes ${f(p64pre.wakeupsPerSecond, 1)} times a second` }
      : { issue: 8, what: "64 idle workers with --prestart: under 0.5 % of a core", value: why(r, "socket -W 64 --prestart"), status: unsupported(why(r, "socket -W 64 --prestart")) },
  );

  // Issue 9: no ratio asked, the rows beside the wrapper's.
  for (const name of [SCGI, FASTCGI]) {
    const l = launcher(r, name);
    out.push(
      l
        ? {
            issue: 9,
            what: `\`${name.replace("socket ", "")}\` beside the wrapper (\`-W 4 -q\`): p50 one at a time, requests/s at 8`,
            value: `${f(l.one?.p50, 2)} ms (${f(ratio(l.one?.p50, lq?.one?.p50), 2)} ×), ${f(rps(l), 0)} req/s (${f(ratio(rps(l), rps(lq)), 2)} ×)`,
            status: "shown",
          }
        : { issue: 9, what: `\`${name.replace("socket ", "")}\` beside the wrapper`, value: why(r, name), status: unsupported(why(r, name)) },
    );
  }

  // Issue 11.
  const mbTimeout = mbps(r, W4_TIMEOUT);
  out.push(
    ratioTarget(11, `\`-W 4 --timeout 30\`: ${r.settings.transferMb} MB ≥ 0.9 × without --timeout`, ratio(mbTimeout, mbW4), 0.9, true, why(r, W4_TIMEOUT), () =>
      mbTimeout !== undefined && mbCopy !== undefined && mbTimeout < 1.25 * mbCopy
        ? `about the copy loop's speed (-c: ${f(mbCopy, 0)} MB/s): this build copies every byte when --timeout is given`
        : "see the transfer table's spread of runs",
      `${f(mbTimeout, 0)} vs ${f(mbW4, 0)} MB/s`,
    ),
  );
  out.push(...issue17(r));
  out.push(...startupTargets(r));
  out.push(...baselineTargets(r));
  return out;
}

/** Issue 17: socket's gateways against fcgiwrap and uWSGI's CGI plugin, and no body lost. */
function issue17(r: Results): Target[] {
  const out: Target[] = [];
  const pairs = [
    { ours: FASTCGI, theirs: FCGIWRAP, label: "fcgiwrap", p50: 0.8, rps: 1.25 },
    { ours: SCGI, theirs: UWSGI, label: "uWSGI", p50: 0.7, rps: 1.4 },
  ];
  for (const x of pairs) {
    const [a, b] = [launcher(r, x.ours), launcher(r, x.theirs)];
    const short = x.ours.replace("socket ", "");
    const missing = a ? why(r, x.theirs) : why(r, x.ours);
    out.push(
      ratioTarget(17, `\`${short}\`: p50 one at a time ≤ ${x.p50} × ${x.label}'s`, ratio(a?.one?.p50, b?.one?.p50), x.p50, false, missing, () =>
        `nginx answering by itself takes ${f(launcher(r, NGINX_ALONE)?.one?.p50, 2)} ms of both; the CGI's fork and exec are in both`,
        `${f(a?.one?.p50, 2)} vs ${f(b?.one?.p50, 2)} ms`),
    );
    out.push(
      ratioTarget(17, `\`${short}\`: requests/s at 8 ≥ ${x.rps} × ${x.label}'s`, ratio(rps(a), rps(b)), x.rps, true, missing, () =>
        `CPU per request: socket's processes ${f(a!.cpu8?.server, 3)} ms, ${x.label}'s ${f(b!.cpu8?.server, 3)} ms; the CGIs ${f(a!.cpu8?.programs, 3)} vs ${f(b!.cpu8?.programs, 3)} ms; nginx ${f(a!.cpu8?.nginx, 3)} vs ${f(b!.cpu8?.nginx, 3)} ms`,
        `${f(rps(a), 0)} vs ${f(rps(b), 0)} req/s; ${forkExecText(r.forkExec)}`),
    );
  }
  for (const name of [SCGI, FASTCGI]) {
    const what = `${BODY_MB} MB POST to a header-first CGI through nginx: ${BODY_COUNT} of ${BODY_COUNT} intact (\`${name.replace("socket ", "")}\`)`;
    const row = r.launchers.bodies?.find((b) => b.name === name + BODY_SUFFIX);
    if (!row || row.skipped) {
      const reason = row?.skipped ?? (r.launchers.rows ? "not measured (a run before issue 17)" : (r.launchers.note ?? "not measured"));
      out.push({ issue: 17, what, value: reason, status: unsupported(reason) });
      continue;
    }
    const met = row.intact === BODY_COUNT;
    out.push({ issue: 17, what, value: `${row.intact} of ${row.of}`, status: met ? "met" : "not met", reason: met ? undefined : row.error });
  }
  return out;
}

/** Issue 18: this build against the previous release's, both measured in this run (startup.ts). */
function startupTargets(r: Results): Target[] {
  const pair = startupPair(r);
  const missing = r.startup?.note ?? "not measured";
  const { now, then } = pair ?? {};
  const w64 = now?.idle[64];
  const anonGoal = 3.5;
  return [
    ratioTarget(18, "`socket -version` ≤ 0.5 × the previous build's", ratio(now?.versionMs, then?.versionMs), 0.5, false, pair ? undefined : missing, () =>
      `this build ${f(now!.versionMs, 2)} ms, the previous ${f(then!.versionMs, 2)} ms (${now!.versionHow})`,
      `${f(now?.versionMs, 2)} vs ${f(then?.versionMs, 2)} ms`),
    ratioTarget(18, "launch to first answer of `-W 4` ≤ 0.5 × the previous build's (median)", ratio(now && launchMedian(now), then && launchMedian(then)), 0.5, false, pair ? undefined : missing, () =>
      `a launch starts the master and then 4 workers, each an executable start (\`-version\`: ${f(now!.versionMs, 2)} vs ${f(then!.versionMs, 2)} ms), on ${r.cores} cores, plus the pool's own set-up`,
      `${f(now && launchMedian(now))} vs ${f(then && launchMedian(then))} ms`),
    w64
      ? {
          issue: 18,
          what: `own heap (Pss_Anon) per idle worker ≤ ${anonGoal} MB (-W 64)`,
          value: `${f(w64.anonMean, 2)} MB (previous build ${f(then!.idle[64]?.anonMean, 2)} MB)`,
          status: w64.anonMean <= anonGoal ? "met" : "not met",
          reason: w64.anonMean <= anonGoal ? undefined : `PSS ${f(w64.workerMean)} MB per worker, of which ${f(w64.fileMean)} MB its share of the executable's pages`,
        }
      : { issue: 18, what: `own heap (Pss_Anon) per idle worker ≤ ${anonGoal} MB (-W 64)`, value: missing, status: "not measured" },
    ratioTarget(18, "respawn storm (`-W 4 --max-requests 1`, 8 at a time) ≥ 1.5 × the previous build's conn/s", ratio(now?.storm.perSecond, then?.storm.perSecond), 1.5, true, pair ? undefined : missing, () =>
      `every connection starts a worker: \`-version\` takes ${f(now!.versionMs, 2)} vs ${f(then!.versionMs, 2)} ms; the storm's p99 ${f(now!.storm.p99, 1)} vs ${f(then!.storm.p99, 1)} ms`,
      `${f(now?.storm.perSecond, 0)} vs ${f(then?.storm.perSecond, 0)} conn/s, p99 ${f(now?.storm.p99, 1)} vs ${f(then?.storm.p99, 1)} ms`),
  ];
}

/** The issue of the baseline build (one request core) and the one of the Bun floor (day two: a start near it). */
const BUILDS_ISSUE = 23;
const FLOOR_ISSUE = 24;
/** Within noise of the baseline: a ratio no more than this fraction worse (better is within too). */
export const NOISE = 0.1;
/** The FastCGI pool's CPU per request against the baseline's, and a Bun executable's start against the floor's. */
const CPU_GOAL = 0.85;
const FLOOR_GOAL = 1.25;

/** This build's gateways against the baseline's (launchers.ts), and start-up against the one-line Bun program (startup.ts). */
function baselineTargets(r: Results): Target[] {
  const out: Target[] = [];
  const [fc, fcBase, cGateway] = [launcher(r, FASTCGI), launcher(r, FASTCGI + BASELINE_SUFFIX), launcher(r, FCGIWRAP)];
  // What the goal leaves socket's own processes beside its CGIs, against what a gateway written in C takes.
  const left = CPU_GOAL * (gatewayCpu(fcBase) ?? NaN) - (fc?.cpu8?.programs ?? NaN);
  out.push(
    ratioTarget(BUILDS_ISSUE, `\`--fastcgi -W 4\`: CPU per request at 8 (socket's processes + CGIs) ≤ ${CPU_GOAL} × ${BASELINE_COMMIT}'s`, ratio(gatewayCpu(fc), gatewayCpu(fcBase)), CPU_GOAL, false, fc ? why(r, FASTCGI + BASELINE_SUFFIX) : why(r, FASTCGI), () =>
      `socket's processes ${f(fc!.cpu8?.server, 3)} vs ${f(fcBase!.cpu8?.server, 3)} ms, the CGIs ${f(fc!.cpu8?.programs, 3)} vs ${f(fcBase!.cpu8?.programs, 3)} ms; ` +
      `the goal leaves socket's processes ${f(left, 3)} ms beside these CGIs, where fcgiwrap's, in C, take ${f(cGateway?.cpu8?.server, 3)} ms; ${forkExecText(r.forkExec)}`,
      `${f(gatewayCpu(fc), 3)} vs ${f(gatewayCpu(fcBase), 3)} ms`),
  );
  for (const name of [SCGI, FASTCGI]) {
    const [now, base] = [launcher(r, name), launcher(r, name + BASELINE_SUFFIX)];
    const what = `\`${name.replace("socket ", "")}\` within noise of ${BASELINE_COMMIT} (req/s at 8 ≥ ${1 - NOISE} ×, p50 one at a time ≤ ${1 + NOISE} ×)`;
    const [rate, p50] = [ratio(rps(now), rps(base)), ratio(now?.one?.p50, base?.one?.p50)];
    if (!Number.isFinite(rate) || !Number.isFinite(p50)) {
      const missing = now ? why(r, name + BASELINE_SUFFIX) : why(r, name);
      out.push({ issue: BUILDS_ISSUE, what, value: missing, status: unsupported(missing) });
      continue;
    }
    const met = rate >= 1 - NOISE && p50 <= 1 + NOISE;
    out.push({
      issue: BUILDS_ISSUE,
      what,
      value: `req/s ${f(rate, 2)} × (${f(rps(now), 0)} vs ${f(rps(base), 0)}), p50 ${f(p50, 2)} × (${f(now?.one?.p50, 2)} vs ${f(base?.one?.p50, 2)} ms)`,
      status: met ? "met" : "not met",
      reason: met ? undefined : `CPU per request (socket's processes + CGIs) ${f(gatewayCpu(now), 3)} vs ${f(gatewayCpu(base), 3)} ms`,
    });
  }
  const now = startupPair(r)?.now;
  const floor = r.startup?.bunFloorMs;
  const missing = r.startup?.floorNote ?? r.startup?.note ?? "not measured";
  const floorText = `the one-line Bun program ${f(floor, 2)} ms`;
  out.push(
    ratioTarget(FLOOR_ISSUE, `\`socket -version\` ≤ ${FLOOR_GOAL} × the one-line Bun program's`, ratio(now?.versionMs, floor), FLOOR_GOAL, false, missing, () =>
      `what socket's start adds to any Bun executable's: the entry's bundle read and evaluated (docs/DESIGN.md, "The start")`,
      `${f(now?.versionMs, 2)} vs ${f(floor, 2)} ms`),
    ratioTarget(FLOOR_ISSUE, `a worker's start (\`--pool-worker\`, to its configuration's check) ≤ ${FLOOR_GOAL} × the one-line Bun program's`, ratio(r.startup?.workerStartMs, floor), FLOOR_GOAL, false, missing, () =>
      `\`-version\` takes ${f(now?.versionMs, 2)} ms, ${floorText}: the rest is the worker's bundle read, its modules evaluated and libc opened (docs/DESIGN.md, "The start")`,
      `${f(r.startup?.workerStartMs, 2)} vs ${f(floor, 2)} ms`),
  );
  return out;
}
