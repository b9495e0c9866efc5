// A cgroup per server under test, so its CPU counts every process it ever
// started: /proc charges a process's CPU to the parent that reaps it, and a
// server whose children are reaped by the kernel (fcgiwrap's workers ignore
// SIGCHLD) would have its CGIs counted nowhere. The server starts inside its
// cgroup from its first instruction (a shell writes its own pid to
// cgroup.procs, then execs the server), so no early child is left out.
// cgroup v1's cpuacct (ns) first, else v2's cpu.stat (usage_usec); where
// neither can be made (not root, no hierarchy), the caller falls back to /proc.
import { existsSync, mkdirSync, readFileSync, rmdirSync } from "node:fs";
import { join } from "node:path";
import { log } from "./config.ts";

export type CgroupKind = "v1" | "v2";

interface Hierarchy {
  dir: string;
  kind: CgroupKind;
}

export interface Cgroup {
  dir: string;
  kind: CgroupKind;
}

const V1 = "/sys/fs/cgroup/cpuacct";
/** The unified hierarchy: alone at the top, or beside v1's (hybrid). */
const V2 = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];

/** CPU time in ns from a cgroup's file: v1's cpuacct.usage (ns), v2's cpu.stat (usage_usec). */
export function parseUsageNs(kind: CgroupKind, text: string): number {
  if (kind === "v1") return Number(text.trim() || NaN);
  const usec = text.match(/^usage_usec\s+(\d+)$/m)?.[1];
  return usec === undefined ? NaN : Number(usec) * 1000;
}

const usageFile = (kind: CgroupKind) => (kind === "v1" ? "cpuacct.usage" : "cpu.stat");

function candidates(): Hierarchy[] {
  const out: Hierarchy[] = [];
  if (existsSync(join(V1, "cpuacct.usage"))) out.push({ dir: V1, kind: "v1" });
  const v2 = V2.find((dir) => existsSync(join(dir, "cgroup.controllers")) && existsSync(join(dir, "cpu.stat")));
  if (v2) out.push({ dir: v2, kind: "v2" });
  return out;
}

let serial = 0;
const freshName = () => `socket-bench-${process.pid}-${++serial}`;

/** The first hierarchy where a cgroup can be made and removed, or why none can. */
function probe(): Hierarchy | string {
  const found = candidates();
  if (found.length === 0) return "no cgroup v1 cpuacct hierarchy and no cgroup v2 cpu.stat under /sys/fs/cgroup";
  const why: string[] = [];
  for (const h of found) {
    const dir = join(h.dir, freshName());
    try {
      mkdirSync(dir);
      rmdirSync(dir);
      return h;
    } catch (e) {
      why.push(`${h.dir}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  return `no cgroup could be made (${why.join("; ")})`;
}

let hierarchy: Hierarchy | string | undefined;

/** Where servers' cgroups are made, or why they cannot be (then CPU comes from /proc alone). */
export function cgroupHierarchy(): Hierarchy | string {
  hierarchy ??= probe();
  return hierarchy;
}

/** How this run counts the CPU of a server's processes, for the report. */
export function cpuMethod(): { cgroup?: CgroupKind; why?: string } {
  const h = cgroupHierarchy();
  return typeof h === "string" ? { why: h } : { cgroup: h.kind };
}

/** A new, empty cgroup for one server; undefined where none can be made. */
export function makeCgroup(): Cgroup | undefined {
  const h = cgroupHierarchy();
  if (typeof h === "string") return undefined;
  const dir = join(h.dir, freshName());
  mkdirSync(dir);
  return { dir, kind: h.kind };
}

/** argv run inside the cgroup from its first instruction: sh joins it (its pid is the server's), then execs. */
export const inCgroup = (cg: Cgroup, argv: string[]) => ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg.dir, ...argv];

/** CPU time of every process that ever ran in the cgroup, in ns. */
export function usageNs(cg: Cgroup): number {
  try {
    return parseUsageNs(cg.kind, readFileSync(join(cg.dir, usageFile(cg.kind)), "utf8"));
  } catch {
    return NaN;
  }
}

/**
 * Kills whatever is left in the cgroup (a CGI in a session of its own
 * escapes its server's process group) and removes it once empty, bounded.
 */
export async function removeCgroup(cg: Cgroup): Promise<void> {
  const until = performance.now() + 5000;
  for (;;) {
    let pids: number[] = [];
    try {
      pids = readFileSync(join(cg.dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
    } catch {
      return; // already removed
    }
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // ended meanwhile
      }
    }
    try {
      rmdirSync(cg.dir);
      return;
    } catch (e) {
      if (performance.now() > until) {
        log(`could not remove ${cg.dir}: ${e instanceof Error ? e.message : String(e)}`);
        return;
      }
    }
    await Bun.sleep(10);
  }
}
