// The benchmark's CPU accounting (scripts/bench/cgroup.ts, measure.ts): the
// cgroup files parsed, the split between a server's own processes and the
// programs it started, and the wrapper that puts a server in its cgroup
// before its first instruction (run here against a plain directory, so no
// root and no cgroup hierarchy are needed).
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { inCgroup, parseUsageNs } from "../scripts/bench/cgroup.ts";
import { cpuBetween, type CpuSample } from "../scripts/bench/measure.ts";
import { tempDir } from "./harness.ts";

test("cgroup v1's cpuacct.usage is ns; v2's cpu.stat gives usage_usec, read as ns", () => {
  expect(parseUsageNs("v1", "32395706450396\n")).toBe(32395706450396);
  const stat = "usage_usec 31635375475\nuser_usec 17945119859\nsystem_usec 13690255615\nnice_usec 1326109\n";
  expect(parseUsageNs("v2", stat)).toBe(31635375475000);
  expect(parseUsageNs("v2", "user_usec 5\n")).toBeNaN();
  expect(parseUsageNs("v1", "")).toBeNaN();
});

const sample = (entries: [string, number, number][]): CpuSample => new Map(entries.map(([key, own, reaped]) => [key, { own, reaped }]));

test("with a cgroup, programs are its total less the server's own processes, whoever reaped them", () => {
  const before = sample([["10:1", 100, 0], ["11:1", 50, 0]]);
  // A worker that reaped nothing (its CGIs were reaped by the kernel), a process that came.
  const after = sample([["10:1", 130, 0], ["11:1", 60, 0], ["12:5", 5, 0]]);
  expect(cpuBetween({ sample: before }, { sample: after })).toEqual({ server: 40, programs: 5 });
  const cpu = cpuBetween({ sample: before, cgroupNs: 1_000_000_000 }, { sample: after, cgroupNs: 1_000_000_000 + 120e6 });
  expect(cpu).toEqual({ server: 40, programs: 80 });
  // /proc's whole ticks can put the server above the cgroup's exact total: never below 0.
  expect(cpuBetween({ sample: before, cgroupNs: 0 }, { sample: after, cgroupNs: 35e6 }).programs).toBe(0);
});

test("the wrapper writes the pid the server then runs as, before it runs", async () => {
  using dir = tempDir();
  const argv = inCgroup({ dir: dir.path, kind: "v1" }, ["sh", "-c", 'echo "$$"; exec cat "$0"', join(dir.path, "cgroup.procs")]);
  const proc = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
  const out = await new Response(proc.stdout).text();
  clearTimeout(timer);
  expect(await proc.exited).toBe(0);
  // The exec'd program's pid, the file the program read (written before it ran), the spawned pid: one.
  const [pid, written] = out.trim().split("\n");
  expect(Number(pid)).toBe(proc.pid);
  expect(Number(written)).toBe(proc.pid);
  expect(readFileSync(join(dir.path, "cgroup.procs"), "utf8").trim()).toBe(String(proc.pid));
});
