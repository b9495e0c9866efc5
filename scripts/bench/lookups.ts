// Finding one contender's figures in a run by its name (the names are the
// constants of scenarios.ts and launchers.ts). A skipped row counts as
// absent, and `why` says why it is.
import { median } from "./loadgen.ts";
import type { LauncherRow, Results } from "./types.ts";

export const conn = (r: Results, name: string) => r.conns.find((c) => c.name === name && !c.skipped);
export const mbps = (r: Results, name: string) => {
  const t = r.transfers.find((x) => x.name === name && !x.skipped && !x.error);
  return t ? median(t.mbPerSecond) : undefined;
};
export const launcher = (r: Results, name: string) => r.launchers.rows?.find((l) => l.name === name && !l.skipped);
export const rps = (l: LauncherRow | undefined) => (l?.at8 ? l.at8.requests / l.at8.seconds : undefined);
/** CPU per request at 8 of a gateway's own processes and its CGIs (nginx's apart). */
export const gatewayCpu = (l: LauncherRow | undefined) => (l?.cpu8 ? l.cpu8.server + l.cpu8.programs : undefined);
export const pool = (r: Results, name: string) => r.pools.find((p) => p.name === name)?.result;
/** Why a row is missing: "not supported by this build", not installed, failed to start. */
export const why = (r: Results, name: string): string => {
  const row = [...r.conns, ...r.transfers, ...(r.launchers.rows ?? []), ...r.pools].find((x) => x.name === name);
  return row?.skipped ?? (row ? "not measured" : (r.launchers.note ?? "not measured"));
};
