// The README's Benchmarks section: only the part between the two markers is
// generated, so the prose around it stays hand-written. The markers are
// looked for verbatim; keep them as they are in README.md.
import { CONCURRENCY } from "./config.ts";
import { f, table } from "./format.ts";
import { BASELINE_SUFFIX } from "./launchers.ts";
import { mbps, rps } from "./lookups.ts";
import { NOT_SUPPORTED } from "./scenarios.ts";
import { targets } from "./targets.ts";
import type { Results } from "./types.ts";

const README_START = "<!-- bench:start (written by npm run bench) -->";
const README_END = "<!-- bench:end -->";

/** The headline rows (the README is a front door; every row is in docs/BENCHMARKS.md). */
const HEADLINE_CONNS = new Set(["socket -W 4", "socket -W 4 --prestart", "tcpserver"]);
const HEADLINE_LAUNCHERS = /^(socket -f -q, wrapper|socket -W 4 -q --prestart, wrapper|socket --scgi|socket --fastcgi|fcgiwrap|uWSGI)/;

/** The README's Benchmarks section between its markers: the key rows and the chart. */
export function readmeSection(r: Results): string {
  const t = targets(r);
  const connRows = r.conns
    .filter((c) => !c.skipped && c.idle && c.loops && HEADLINE_CONNS.has(c.name))
    .map((c) => [c.name, f(c.idle!.p50, 2), ...CONCURRENCY.map((k) => f(c.loops![k].perSecond, 0)), f(mbps(r, c.name), 0)]);
  const launcherRows = (r.launchers.rows ?? []).filter((l) => !l.skipped && l.one && l.at8 && HEADLINE_LAUNCHERS.test(l.name) && !l.name.endsWith(BASELINE_SUFFIX)).map((l) => [l.name, f(l.one!.p50, 2), f(rps(l), 0)]);
  const missing = [...r.conns, ...(r.launchers.rows ?? [])].filter((x) => x.skipped).map((x) => x.name);
  return [
    README_START,
    `![throughput and latency against concurrency, 100 MB, the launchers' scenario, idle pools](docs/bench.svg)`,
    "",
    `One run on the ${r.cores}-core development machine (${r.date} UTC${r.quick ? ", quick mode" : ""}); every contender runs \`cat\` per connection on 127.0.0.1; conn/s from closed loops of ${r.settings.rounds * r.settings.roundS} s:`,
    "",
    table(["server", "idle p50 ms", ...CONCURRENCY.map((k) => `conn/s at ${k}`), `${r.settings.transferMb} MB, MB/s`], connRows),
    "",
    ...(launcherRows.length
      ? [`nginx → socket → a C CGI (the launchers' scenario):`, "", table(["contender", "p50 ms, one at a time", `req/s, ${r.settings.launcherConcurrency} at a time`], launcherRows), ""]
      : []),
    `Targets of the issues: ${t.filter((x) => x.status === "met").length} met, ${t.filter((x) => x.status === "not met").length} not met, ${t.filter((x) => x.status === NOT_SUPPORTED).length} not supported by the build measured${missing.length ? ` (${missing.join("; ")})` : ""}; each with its ratio and reason in [docs/BENCHMARKS.md](docs/BENCHMARKS.md#targets).`,
    README_END,
  ].join("\n");
}

/** The README with the generated part of its Benchmarks section replaced (unchanged without the markers). */
export function updateReadme(readme: string, section: string): string {
  const start = readme.indexOf(README_START);
  const end = readme.indexOf(README_END);
  if (start >= 0 && end > start) return readme.slice(0, start) + section + readme.slice(end + README_END.length);
  return readme;
}
