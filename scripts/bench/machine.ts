// The machine a run was measured on, as markdown lines for docs/BENCHMARKS.md
// (recorded by main.ts in docs/bench.json, so render.ts repeats it as measured).
import { ROOT } from "./config.ts";
import { read } from "./measure.ts";

/** A command's trimmed output; empty when it is missing or fails (the line then shows what is known). */
function sh(argv: string[]): string {
  try {
    return Bun.spawnSync(argv, { stderr: "ignore" }).stdout.toString().trim();
  } catch {
    return "";
  }
}

export function machine(): string {
  const cpuinfo = read("/proc/cpuinfo");
  const field = (name: string) => cpuinfo.match(new RegExp(`^${name}\\s*:\\s*(.*)$`, "m"))?.[1] ?? "?";
  const processors = cpuinfo.match(/^processor\s*:/gm)?.length ?? 0;
  const memKb = Number(read("/proc/meminfo").match(/^MemTotal:\s+(\d+)/m)?.[1] ?? 0);
  const packages = sh(["dpkg-query", "-W", "-f", "${Package} ${Version}, ", "ucspi-tcp", "socat", "hyperfine", "coreutils", "nginx", "wrk", "gcc"]).replace(/,$/, "");
  const commit = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]);
  const dirty = sh(["git", "-C", ROOT, "status", "--porcelain", "src"]) ? " plus uncommitted changes in src/" : "";
  return [
    `- CPU: ${processors} × ${field("model name")}, ${field("cpu MHz")} MHz, cache ${field("cache size")} (/proc/cpuinfo); nproc ${sh(["nproc"])}`,
    `- Memory: ${(memKb / 2 ** 20).toFixed(1)} GiB`,
    `- Kernel: ${sh(["uname", "-srvm"])}`,
    process.env.BENCH_SOCKET
      ? `- Bun ${Bun.version} (${Bun.revision.slice(0, 9)}); socket: BENCH_SOCKET=${process.env.BENCH_SOCKET}`
      : `- Bun ${Bun.version} (${Bun.revision.slice(0, 9)}); socket built from ${commit}${dirty}`,
    `- Others: ${packages || "not found by dpkg-query"}`,
  ].join("\n");
}
