// This machine's fork+exec cost: fork-exec.c starts /bin/true N times one
// after another and prints the mean ms per start. The fork-based peers
// (tcpserver, socat, fcgiwrap, uWSGI's CGI plugin) pay it per request and
// socket's gateways pay it per CGI, so the ratios against them move with it.
import { join } from "node:path";
import { QUICK, log } from "./config.ts";
import { compileC } from "./launchers.ts";
import type { Bench } from "./scenarios.ts";

export const FORK_EXEC_RUNS = QUICK ? 500 : 2000;

export interface ForkExec {
  /** Mean ms per fork, execv("/bin/true"), waitpid. */
  ms?: number;
  runs: number;
  /** Why it was not measured. */
  note?: string;
}

export function forkExec(b: Bench): ForkExec {
  const binary = join(b.scratch, "fork-exec");
  const why = compileC("fork-exec.c", binary);
  if (why) return { runs: FORK_EXEC_RUNS, note: why };
  log(`fork+exec of /bin/true, ${FORK_EXEC_RUNS} times`);
  const r = Bun.spawnSync([binary, String(FORK_EXEC_RUNS)], { stdout: "pipe", stderr: "pipe" });
  const ms = Number(r.stdout.toString().trim());
  if (r.exitCode !== 0 || !Number.isFinite(ms)) return { runs: FORK_EXEC_RUNS, note: `fork-exec failed: ${r.stderr.toString().trim()}` };
  return { ms, runs: FORK_EXEC_RUNS };
}

/** The figure, or why there is none. */
export const forkExecMs = (x: ForkExec | undefined) => (x?.ms !== undefined ? `${x.ms.toFixed(3)} ms` : `not measured${x?.note ? ` (${x.note})` : ""}`);

/** The figure as the report quotes it beside a ratio. */
export const forkExecText = (x: ForkExec | undefined) => `this machine's fork+exec of /bin/true: ${forkExecMs(x)}`;
