// "What each change bought": pairs of contenders of the same run, before →
// after, beside the figure each issue was filed with (measured then by
// other means, so kept here as text).
import { f, table } from "./format.ts";
import { F_Q, FASTCGI, SCGI, W4_NO_Q, W4_Q as L_W4_Q, W4_Q_PRESTART } from "./launchers.ts";
import { conn, launcher, mbps, pool, rps, why } from "./lookups.ts";
import { W4, W4_PRESTART, W4_Q, W4_TIMEOUT } from "./scenarios.ts";
import type { Results } from "./types.ts";

/** Comparisons from this run's rows, beside the figure the issue was filed with. */
export function bought(r: Results): string {
  const rows: string[][] = [];
  const cmp = (before: number | undefined, after: number | undefined, unit: string, digits: number) =>
    before === undefined || after === undefined || !Number.isFinite(before) || !Number.isFinite(after)
      ? undefined
      : `${f(before, digits)} → ${f(after, digits)} ${unit} (${f(after / before, 2)} ×)`;
  const add = (change: string, what: string, value: string | undefined, missing: string, filed: string) =>
    rows.push([change, what, value ?? missing, filed]);
  const w4 = conn(r, W4);
  const pre = conn(r, W4_PRESTART);
  const missingPre = why(r, W4_PRESTART);
  add("--prestart (-p cat)", "idle turnaround p50, -W 4 → -W 4 --prestart", cmp(w4?.idle?.p50, pre?.idle?.p50, "ms", 2), missingPre, "-W 4 0.81 ms, tcpserver 0.83 ms (issue 8)");
  add("--prestart (-p cat)", "conn/s at 8, -W 4 → -W 4 --prestart", cmp(w4?.loops?.[8].perSecond, pre?.loops?.[8].perSecond, "conn/s", 0), missingPre, "");
  add("--prestart (-p cat)", `${r.settings.transferMb} MB, -W 4 → -W 4 --prestart`, cmp(mbps(r, W4), mbps(r, W4_PRESTART), "MB/s", 0), missingPre, "");
  const fq = launcher(r, F_Q);
  const lq = launcher(r, L_W4_Q);
  const lnoq = launcher(r, W4_NO_Q);
  const lpre = launcher(r, W4_Q_PRESTART);
  const missingL = (name: string) => why(r, name);
  add("--prestart (launchers)", "p50 one at a time, -W 4 -q → -W 4 -q --prestart", cmp(lq?.one?.p50, lpre?.one?.p50, "ms", 2), missingL(W4_Q_PRESTART), "-W 4 1.34 ms, -f 1.30 ms (issue 8)");
  add("--prestart (launchers)", "p50 one at a time, -f -q → -W 4 -q --prestart", cmp(fq?.one?.p50, lpre?.one?.p50, "ms", 2), missingL(W4_Q_PRESTART), "");
  add("--prestart (launchers)", `req/s at ${r.settings.launcherConcurrency}, -W 4 -q → -W 4 -q --prestart`, cmp(rps(lq), rps(lpre), "req/s", 0), missingL(W4_Q_PRESTART), "");
  add("-q without copying (launchers)", `req/s at ${r.settings.launcherConcurrency}, without -q → with -q`, cmp(rps(lnoq), rps(lq), "req/s", 0), missingL(L_W4_Q), "-q sent every byte through the copy loop (issue 8)");
  add("-q without copying (launchers)", "socket's CPU per request, without -q → with -q", cmp(lnoq?.cpu8?.server, lq?.cpu8?.server, "ms", 3), missingL(L_W4_Q), "");
  add("-q without copying (-p cat)", `${r.settings.transferMb} MB, -W 4 → -W 4 -q`, cmp(mbps(r, W4), mbps(r, W4_Q), "MB/s", 0), why(r, W4_Q), "");
  const p64 = pool(r, "socket -W 64");
  add("poll(2) wait, no timer", "64 idle workers, % of a core", p64 ? `${f(p64.idleCpuPercent, 2)} %` : undefined, why(r, "socket -W 64"), "3.7 % (issue 8)");
  add("poll(2) wait, no timer", "wake-ups / s of an idle worker's main thread", p64 ? f(p64.wakeupsPerSecond, 1) : undefined, why(r, "socket -W 64"), "5 a second (issue 8)");
  add("--timeout without the copy loop", `${r.settings.transferMb} MB, -W 4 → -W 4 --timeout 30`, cmp(mbps(r, W4), mbps(r, W4_TIMEOUT), "MB/s", 0), why(r, W4_TIMEOUT), "0.73 × (issue 11)");
  for (const name of [SCGI, FASTCGI]) {
    const l = launcher(r, name);
    add(`${name.split(" ")[1]} (no wrapper)`, "p50 one at a time, wrapper -W 4 -q → this", cmp(lq?.one?.p50, l?.one?.p50, "ms", 2), missingL(name), "an exec of the wrapper per request (issue 9)");
    add(`${name.split(" ")[1]} (no wrapper)`, `req/s at ${r.settings.launcherConcurrency}, wrapper -W 4 -q → this`, cmp(rps(lq), rps(l), "req/s", 0), missingL(name), "");
  }
  return table(["change", "measured", "this run", "when the issue was filed"], rows);
}
