// The shapes the report's modules share: the rows a run records (kept in
// docs/bench.json) and a target's verdict. Types only, and nothing of the
// report's other modules, so every one of them can import it without a cycle.
import type { CgroupKind } from "./cgroup.ts";
import type { Settings } from "./config.ts";
import type { ForkExec } from "./forkexec.ts";
import type { Requests } from "./launchers.ts";
import type { Summary } from "./loadgen.ts";
import type { Cpu, Floor, IdlePool } from "./measure.ts";
import type { ReloadRow } from "./reload.ts";
import type { NOT_SUPPORTED } from "./scenarios.ts";
import type { StartupResult } from "./startup.ts";

export interface ConnRow {
  name: string;
  command: string;
  skipped?: string;
  idle?: Summary;
  loops?: Record<number, Summary>;
  /** Milliseconds of CPU per connection in the closed loop at 8. */
  cpu8?: Cpu & { loadgen: number };
}

export interface TransferRow {
  name: string;
  skipped?: string;
  mbPerSecond: number[];
  error: string;
}

export interface LauncherRow {
  name: string;
  command: string;
  skipped?: string;
  one?: Summary;
  /** One at a time, a POST of POST_KB KiB to the same CGI (which reads it); absent from runs before issue 17. */
  post?: Summary;
  at8?: Requests;
  /** Milliseconds of CPU per request at 8: socket's processes, per-request processes, nginx. */
  cpu8?: Cpu & { nginx: number };
}

/** BODY_MB POSTs through nginx to a CGI that writes its header before reading the body (issue 17). */
export interface BodyRow {
  name: string;
  skipped?: string;
  intact: number;
  of: number;
  /** The first failure, when one failed. */
  error: string;
}

export interface Results {
  /** The phases' lengths this run was measured with (quick or full). */
  settings: Settings;
  /** The machine, the versions and the commit measured, as markdown lines. */
  machine: string;
  date: string;
  quick: boolean;
  cores: number;
  features: string[];
  conns: ConnRow[];
  /** Share of the machine's CPU used by other processes during the closed loops. */
  elsewherePercent: number;
  transfers: TransferRow[];
  pools: { name: string; skipped?: string; result?: IdlePool }[];
  launches: { name: string; ms: number[] }[];
  floor: Floor[];
  spawnMs: number;
  /** This machine's fork+exec of /bin/true (fork-exec.c); absent from runs before it. */
  forkExec?: ForkExec;
  /** Idle turnaround through the echo server: the network and the load generator, no program. */
  networkFloor: Summary;
  /** The launchers' scenario, or why it did not run. */
  launchers: { rows?: LauncherRow[]; bodies?: BodyRow[]; note?: string };
  /** Steady state against a HUP and a USR2 under load (issue 16); absent from runs before it. */
  reload?: { rows?: ReloadRow[]; note?: string };
  /** Start-up and memory against the previous release's build (issue 18); absent from runs before it. */
  startup?: StartupResult;
  /** How the CPU tables count a server's processes: its cgroup, or /proc alone (and why); absent from runs before cgroups (/proc). */
  cpuMethod?: { cgroup?: CgroupKind; why?: string };
  notes: string[];
  seconds: number;
}

/** How a target came out; "shown" is a row with no goal, set beside another (issue 9). */
export type Status = "met" | "not met" | typeof NOT_SUPPORTED | "not measured" | "shown";

export interface Target {
  issue: number;
  what: string;
  value: string;
  status: Status;
  /** The measured reason for "not met", or what is missing. */
  reason?: string;
}
