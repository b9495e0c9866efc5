// The results tables of docs/BENCHMARKS.md: connections, CPU, bulk data,
// the launchers' scenario, idle pools, launch, the floor and the targets.
import { BODY_COUNT, BODY_MB, CONCURRENCY, IDLE_PAUSE_MS, POST_KB } from "./config.ts";
import { f, ratio, table } from "./format.ts";
import { BUN_FLOOR_SOURCE } from "./builds.ts";
import { BUNDLE_FLAGS } from "../build.ts";
import { forkExecText } from "./forkexec.ts";
import { BASELINE_COMMIT, BASELINE_SUFFIX, F_Q, FASTCGI, NGINX_ALONE, SCGI } from "./launchers.ts";
import { median, REQUEST } from "./loadgen.ts";
import { gatewayCpu, launcher, mbps, rps, why } from "./lookups.ts";
import { ECHO, W4 } from "./scenarios.ts";
import { NOISE } from "./targets.ts";
import { IDLE_WORKERS, launchMedian, PREVIOUS_COMMIT, startupPair } from "./startup.ts";
import type { ConnRow, Results, Target } from "./types.ts";

/** The Results section, table by table; `t` is the targets, judged once by markdown.ts for the count and this table alike. */
export function tables(r: Results, t: Target[]): string {
  const skipRow = (name: string, why: string, cells: number) => [name, why, ...Array.from({ length: cells - 2 }, () => "")];
  const failures = (c: ConnRow) => {
    const all = [c.idle!, ...CONCURRENCY.map((k) => c.loops![k])];
    const count = all.reduce((s, x) => s + x.failures, 0);
    return count === 0 ? "0" : `${count} (${all.find((x) => x.firstError)?.firstError})`;
  };
  const connHead = ["server", "idle p50 / p99 ms", ...CONCURRENCY.flatMap((k) => [`c=${k} conn/s`, `c=${k} p50 / p99 ms`]), "failed"];
  const connTable = table(
    connHead,
    r.conns.map((c) =>
      c.skipped || !c.loops || !c.idle
        ? skipRow(c.name, c.skipped ?? "not measured", connHead.length)
        : [
            c.name,
            `${f(c.idle.p50, 2)} / ${f(c.idle.p99, 2)}`,
            ...CONCURRENCY.flatMap((k) => [f(c.loops![k].perSecond, 0), `${f(c.loops![k].p50, 2)} / ${f(c.loops![k].p99, 2)}`]),
            failures(c),
          ],
    ),
  );
  const cpuHead = ["server", "server processes", "per-connection processes", "load generator", "all", "cores × 1000 ÷ all", "measured conn/s"];
  const cpuTable = table(
    cpuHead,
    r.conns.map((c) => {
      if (!c.cpu8 || !c.loops) return skipRow(c.name, c.skipped ?? "not measured", cpuHead.length);
      const all = c.cpu8.server + c.cpu8.programs + c.cpu8.loadgen;
      return [c.name, f(c.cpu8.server, 3), f(c.cpu8.programs, 3), f(c.cpu8.loadgen, 3), f(all, 3), f((r.cores * 1000) / all, 0), f(c.loops[8].perSecond, 0)];
    }),
  );
  const base = mbps(r, W4);
  const transferTable = table(
    ["server", "MB/s (median)", "× socket -W 4", `all runs, in order`, "reply intact"],
    r.transfers.map((x) =>
      x.skipped
        ? skipRow(x.name, x.skipped, 5)
        : [x.name, f(median(x.mbPerSecond), 0), f(median(x.mbPerSecond) / (base ?? NaN), 2), x.mbPerSecond.map((v) => f(v, 0)).join(", "), x.error || "yes"],
    ),
  );
  let launcherTables = `Not run: ${r.launchers.note ?? ""}`;
  if (r.launchers.rows) {
    const fqP50 = launcher(r, F_Q)?.one?.p50;
    const head = ["contender", "one at a time p50 / p99 ms", "p50 × `-f -q`'s", `POST ${POST_KB} KiB one at a time p50 / p99 ms`, `${r.settings.launcherConcurrency} at a time req/s`, "server's processes ms CPU / req", "per-request processes", "nginx", "failed"];
    launcherTables = table(
      head,
      r.launchers.rows.map((l) => {
        if (l.skipped || !l.one || !l.at8) return skipRow(l.name, l.skipped ?? "not measured", head.length);
        const failed = l.one.failures + l.at8.failures + (l.post?.failures ?? 0);
        return [
          l.name,
          `${f(l.one.p50, 2)} / ${f(l.one.p99, 2)}`,
          f(ratio(l.one.p50, fqP50), 2),
          l.post ? `${f(l.post.p50, 2)} / ${f(l.post.p99, 2)}` : "",
          f(rps(l), 0),
          l.name === NGINX_ALONE ? "–" : f(l.cpu8?.server, 3),
          l.name === NGINX_ALONE ? "–" : f(l.cpu8?.programs, 3),
          f(l.cpu8?.nginx, 3),
          failed === 0 ? "0" : `${failed} (${l.one.firstError || l.post?.firstError || l.at8.firstError})`,
        ];
      }),
    );
    const bodies = r.launchers.bodies ?? [];
    if (bodies.length) {
      launcherTables += `\n\n${BODY_COUNT} POSTs of ${BODY_MB} MB one after another to a CGI that writes its header before it reads the body (\`printf 'Content-Type: ...'; head -c $CONTENT_LENGTH | sha256sum\`, as git-http-backend does), the answer checked against the body's sha256 (test/body.test.ts checks the same):\n\n${table(
        ["gateway", "intact", "first failure"],
        bodies.map((x) => (x.skipped ? [x.name, x.skipped, ""] : [x.name, `${x.intact} of ${x.of}${x.of < BODY_COUNT ? ` (stopped at a timeout)` : ""}`, x.error])),
      )}`;
    }
    launcherTables += `\n\nCommands (WRAPPER: scripts/bench/scgi-wrapper.c, CGI: scripts/bench/hello-cgi.c, both compiled with \`cc -O2\` at run time; nginx sends fcgiwrap \`fastcgi_param SCRIPT_FILENAME CGI\`; ${fcgiwrapCgis(r)}):\n\n${r.launchers.rows
      .map((l) => `- ${l.name}: \`${l.command}\``)
      .join("\n")}`;
    launcherTables += `\n\n${baselineTable(r)}`;
  }
  const poolHead = ["pool", "workers", "master PSS MB", "worker PSS MB mean (min–max)", "of which own heap (Pss_Anon)", "of which shared executable (Pss_File)", `idle CPU, % of a core (${r.settings.idleCpuS} s)`, "wake-ups / s of a worker's main thread"];
  const poolTable = table(
    poolHead,
    r.pools.map((p) => {
      const m = p.result;
      if (!m) return skipRow(p.name, p.skipped ?? "not measured", poolHead.length);
      return [p.name, String(m.count), f(m.master), `${f(m.workerMean)} (${f(m.workerMin)}–${f(m.workerMax)})`, f(m.anonMean), f(m.fileMean), f(m.idleCpuPercent, 2), f(m.wakeupsPerSecond, 1)];
    }),
  );
  const launchTable = table(["server", "median ms", "worst ms"], r.launches.map((l) => [l.name, f(median(l.ms)), f(l.ms[l.ms.length - 1])]));
  const floorTable = table(
    ["the floor", "ms"],
    [
      ...r.floor.map((x) => [`no network: ${x.name}`, f(x.ms, 2)]),
      ["no network: `cat </dev/null` through `await Bun.spawn(...).exited` (as a worker starts it), median", f(r.spawnMs, 2)],
      [`no network: fork, execv \`/bin/true\`, waitpid (scripts/bench/fork-exec.c), mean of ${r.forkExec?.runs ?? "–"}`, f(r.forkExec?.ms, 3)],
      [`no program: idle turnaround through ${ECHO.name}, p50 / p99`, `${f(r.networkFloor.p50, 2)} / ${f(r.networkFloor.p99, 2)}`],
    ],
  );
  const targetTable = table(
    ["issue", "target (ratios within this run)", "this run", "status"],
    t.map((x) => [String(x.issue), x.what, x.value, x.reason && x.status === "not met" ? `${x.status}: ${x.reason}` : x.status]),
  );
  return [
    `### Connections: ${REQUEST.length} bytes echoed through \`cat\``,
    "",
    `Idle: ${r.settings.idleCount} connections one at a time. c=N: N connections at a time, closed loop, ${r.settings.rounds * r.settings.roundS} s. Latencies are connect to EOF.`,
    "",
    connTable,
    "",
    "### CPU milliseconds per connection (closed loop at 8)",
    "",
    cpuTable,
    "",
    `### ${r.settings.transferMb} MB through one connection (echoed by \`cat\`, sent and received at once, ${r.settings.transferRuns} runs)`,
    "",
    transferTable,
    "",
    "### The launchers' scenario: nginx → socket → a C CGI",
    "",
    `One at a time: ${r.settings.launcherCount} HTTP/1.0 GETs each, a new connection to nginx each (our own Bun client, read to EOF, status 200 and body checked), contenders in turn with ${IDLE_PAUSE_MS} ms pauses. ${r.settings.launcherConcurrency} at a time: ${r.settings.wrk ? `\`wrk -c ${r.settings.launcherConcurrency} -t 2 -d ${r.settings.roundS}s\` (keep-alive to nginx; nginx opens a new connection to socket per request)` : "our own closed loop of HTTP/1.0 GETs (wrk is not installed)"}, ${r.settings.rounds} rounds each, rotating. CPU per request at ${r.settings.launcherConcurrency} ${r.cpuMethod?.cgroup ? "from each server's cgroup (nginx's from /proc)" : "from /proc"}, as in the connection table.`,
    "",
    launcherTables,
    "",
    ...reloadSection(r),
    "### Idle pools",
    "",
    poolTable,
    "",
    `### Launch to the first answered connection (${r.settings.launches} launches)`,
    "",
    launchTable,
    "",
    ...startupSection(r),
    "### The floor: starting the program alone, and the network alone",
    "",
    floorTable,
    "",
    "### Targets",
    "",
    targetTable,
    ...(r.notes.length ? ["", ...r.notes.map((x) => `Note: ${x}`)] : []),
  ].join("\n");
}

/** Steady state against a HUP and a USR2, when the run measured them. */
function reloadSection(r: Results): string[] {
  const rows = r.reload?.rows;
  if (!rows) return [];
  const reloadTable = table(
    ["socket -W 4, 8 at a time", "connections", "failed", "p50 / p99 ms", "signal to done ms"],
    rows.map((x) => [
      x.name,
      String(x.summary.count),
      x.summary.failures === 0 ? "0" : `${x.summary.failures} (${x.summary.firstError})`,
      `${f(x.summary.p50, 2)} / ${f(x.summary.p99, 2)}`,
      x.doneMs === undefined ? "" : f(x.doneMs, 0),
    ]),
  );
  return [
    "### Reload (HUP) and upgrade (USR2) under load",
    "",
    "A closed loop of 8 against `socket -W 4 -p cat`, replies checked byte for byte. The HUP and USR2 rows count the connections begun between the signal and its end (every worker replaced; the old master gone).",
    "",
    reloadTable,
    "",
  ];
}

/** This build against the previous release's (issue 18), when the run measured them. */
function startupSection(r: Results): string[] {
  if (!r.startup) return [];
  const head = `### Start-up and memory against the previous release's build (${PREVIOUS_COMMIT}, before --bytecode)`;
  const pair = startupPair(r);
  if (!pair) return [head, "", `Not run: ${r.startup.note ?? "not measured"}`, ""];
  const { now, then } = pair;
  const row = (what: string, a: number | undefined, b: number | undefined, digits = 1, shown?: [string, string]) => [
    what,
    shown?.[0] ?? f(a, digits),
    shown?.[1] ?? f(b, digits),
    f(ratio(a, b), 2),
  ];
  const worst = (x: typeof now) => x.launchMs[x.launchMs.length - 1];
  const rows = [
    row(`\`socket -version\` ms (${now.versionHow})`, now.versionMs, then.versionMs, 2),
    row(`launch to first answer of \`-W 4\`, median (worst) ms of ${now.launchMs.length}`, launchMedian(now), launchMedian(then), 1, [
      `${f(launchMedian(now))} (${f(worst(now))})`,
      `${f(launchMedian(then))} (${f(worst(then))})`,
    ]),
    row("respawn storm (`-W 4 --max-requests 1`, 8 at a time): conn/s", now.storm.perSecond, then.storm.perSecond, 0),
    row("respawn storm: p50 / p99 ms", now.storm.p99, then.storm.p99, 2, [
      `${f(now.storm.p50, 2)} / ${f(now.storm.p99, 2)}`,
      `${f(then.storm.p50, 2)} / ${f(then.storm.p99, 2)}`,
    ]),
    row("respawn storm: failed", now.storm.failures, then.storm.failures, 0),
    ...IDLE_WORKERS.flatMap((n) => [
      row(`idle worker PSS MB, \`-W ${n}\` (mean)`, now.idle[n]?.workerMean, then.idle[n]?.workerMean),
      row(`of which own heap (Pss_Anon) MB, \`-W ${n}\``, now.idle[n]?.anonMean, then.idle[n]?.anonMean, 2),
    ]),
  ];
  return [
    head,
    "",
    `Both builds in this run, each a private copy: the previous one built from git (\`git archive ${PREVIOUS_COMMIT}\`, \`npm ci\`, \`npm run build\`) into a temporary directory. Pools serve \`cat\` as above; launches alternate between the builds, the storm's rounds rotate, idle pools are measured alone after settling. The p99 column's ratio is of the p99.`,
    "",
    table(["figure", "this build", `previous (${PREVIOUS_COMMIT})`, "this ÷ previous"], rows),
    "",
    ...floorSection(r),
  ];
}

/** This build's starts against the one-line Bun program's, when the run measured it. */
function floorSection(r: Results): string[] {
  const floor = r.startup?.bunFloorMs;
  const now = startupPair(r)?.now;
  if (floor === undefined || !now) return r.startup?.floorNote ? [`The one-line Bun program: not measured (${r.startup.floorNote}).`, ""] : [];
  const row = (what: string, ms: number | undefined) => [what, f(ms, 2), f(ratio(ms, floor), 2)];
  return [
    `Against the floor of any Bun executable: \`${BUN_FLOOR_SOURCE}\` compiled as socket is (\`bun build --compile --bytecode ${BUNDLE_FLAGS.join(" ")}\`), timed as \`-version\` is (${now.versionHow}). A worker's start is \`SOCKET_WORKER={} socket --pool-worker\`: the executable starts, loads the worker's modules, finds the configuration malformed and exits, before any socket or thread of the pool's.`,
    "",
    table(
      ["start", "ms", "× the one-line Bun program"],
      [row(`\`${BUN_FLOOR_SOURCE}\` compiled (the floor)`, floor), row("`socket -version`", now.versionMs), row("a worker's start (`--pool-worker`, to its configuration's check)", r.startup?.workerStartMs)],
    ),
    "",
  ];
}

/** socket's gateways against the same gateways run by the baseline build, in the same rounds. */
/** Where fcgiwrap's CGIs' CPU went: its workers ignore SIGCHLD, so no process of its tree reaps them. */
const fcgiwrapCgis = (r: Results) =>
  r.cpuMethod?.cgroup
    ? "fcgiwrap's workers ignore SIGCHLD, so the kernel reaps its CGIs; its cgroup counts their CPU all the same"
    : `fcgiwrap's workers ignore SIGCHLD, so the kernel reaps its CGIs and /proc counts their CPU nowhere: its "per-request processes" column is 0`;

function baselineTable(r: Results): string {
  const rows = [SCGI, FASTCGI].map((name) => {
    const [now, base] = [launcher(r, name), launcher(r, name + BASELINE_SUFFIX)];
    if (!now || !base) return [name, why(r, now ? name + BASELINE_SUFFIX : name), "", "", ""];
    return [
      name,
      `${f(ratio(now.one?.p50, base.one?.p50), 2)} (${f(now.one?.p50, 2)} vs ${f(base.one?.p50, 2)} ms)`,
      `${f(ratio(rps(now), rps(base)), 2)} (${f(rps(now), 0)} vs ${f(rps(base), 0)})`,
      `${f(ratio(gatewayCpu(now), gatewayCpu(base)), 2)} (${f(gatewayCpu(now), 3)} vs ${f(gatewayCpu(base), 3)} ms)`,
      `${f(ratio(now.cpu8?.server, base.cpu8?.server), 2)} (${f(now.cpu8?.server, 3)} vs ${f(base.cpu8?.server, 3)} ms)`,
    ];
  });
  return `This build's gateways against ${BASELINE_COMMIT}'s (the rows "${BASELINE_SUFFIX.trim()}" above, built from git in this run), this ÷ baseline; within noise means a ratio at most ${NOISE * 100} % worse. Beside the ratios, ${forkExecText(r.forkExec)}: every CGI request pays one, through socket's gateways, fcgiwrap and uWSGI alike, so the ratios against those peers move with it.

${table(["gateway", "p50 one at a time", `req/s at ${r.settings.launcherConcurrency}`, "CPU / req, socket's processes + CGIs", "CPU / req, socket's processes"], rows)}`;
}
