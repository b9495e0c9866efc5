// Which servers run, with which command lines, and starting and stopping
// them. Features still being built on other branches (--prestart, --scgi,
// --fastcgi) are found in `socket --help` at run time; a contender that
// needs one the build lacks is skipped with "not supported by this build".
import { copyFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { inCgroup, makeCgroup, removeCgroup, type Cgroup } from "./cgroup.ts";
import { ROOT } from "./config.ts";
import { exchange } from "./loadgen.ts";

export const FEATURES = ["--prestart", "--scgi", "--fastcgi"] as const;
export type Feature = (typeof FEATURES)[number];

export interface Bench {
  /** A temporary directory for this run, removed at its end. */
  scratch: string;
  /** The private copy of dist/socket the servers run. */
  socket: string;
  features: Set<Feature>;
}

export interface Contender {
  name: string;
  argv: (port: number) => string[];
  /** The Debian program it needs (scripts/install-bench-deps.sh). */
  needs?: string;
  /** The option of socket it needs; skipped when this build lacks it. */
  feature?: Feature;
  /** Why it cannot run in this run (another build that could not be made). */
  skip?: string;
}

export const NOT_SUPPORTED = "not supported by this build";

/** The build measured: dist/socket, or BENCH_SOCKET=/path/to/socket (another branch's build, say). */
export const BUILD = process.env.BENCH_SOCKET ?? join(ROOT, "dist", "socket");

/**
 * A private copy of the executable: the other work in this tree may rebuild
 * dist/socket mid-run, and processes of another copy would share (and so
 * shrink the PSS of) its pages.
 */
export function prepare(): Bench {
  const scratch = mkdtempSync(join(tmpdir(), "socket-bench-"));
  const socket = join(scratch, "socket");
  copyFileSync(BUILD, socket);
  const help = Bun.spawnSync([socket, "--help"]).stdout.toString();
  const features = new Set(FEATURES.filter((f) => new RegExp(`(^|\\s)${f}\\b`, "m").test(help)));
  return { scratch, socket, features };
}

/** Why a contender cannot run here, or undefined when it can. */
export function unavailable(b: Bench, c: Contender): string | undefined {
  if (c.skip) return c.skip;
  if (c.feature && !b.features.has(c.feature)) return `${NOT_SUPPORTED} (no ${c.feature} in socket --help)`;
  if (c.needs && !Bun.which(c.needs)) return `\`${c.needs}\` is not installed (run scripts/install-bench-deps.sh as root)`;
  return undefined;
}

/** A pool serving `cat` on 127.0.0.1. */
const pool = (b: Bench, workers: string, extra: string[] = []) => (port: number) =>
  [b.socket, "-p", "cat", "-l", "-f", "-W", workers, ...extra, "-B", "127.0.0.1", "-s", String(port)];

export const W4 = "socket -W 4";
export const W4_PRESTART = "socket -W 4 --prestart";
export const W4_Q = "socket -W 4 -q";
export const W4_COPY = "socket -W 4 -c (copy loop)";
export const W4_TIMEOUT = "socket -W 4 --timeout 30";
export const TCPSERVER = "tcpserver";

/** The connection scenarios' servers, each running `cat` per connection. */
export function connectionContenders(b: Bench): Contender[] {
  return [
    { name: W4, argv: pool(b, "4") },
    { name: W4_PRESTART, argv: pool(b, "4", ["--prestart"]), feature: "--prestart" },
    // -q: close when cat's output ends (with a program, not stdin's end).
    { name: W4_Q, argv: pool(b, "4", ["-q"]) },
    { name: "socket -W 2:16", argv: pool(b, "2:16") },
    { name: "socket -f", argv: (port) => [b.socket, "-s", "-l", "-f", "-p", "cat", "-B", "127.0.0.1", String(port)] },
    // -c 64: as many programs at once as the largest concurrency measured.
    { name: TCPSERVER, needs: "tcpserver", argv: (port) => ["tcpserver", "-RHl0", "-b", "256", "-c", "64", "127.0.0.1", String(port), "cat"] },
    {
      name: "socat",
      needs: "socat",
      argv: (port) => ["socat", `TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr,backlog=256`, "SYSTEM:cat"],
    },
  ];
}

/** Contenders of the 100 MB transfer only. */
export function transferOnlyContenders(b: Bench): Contender[] {
  return [
    // -c (CRLF) forces the copy loop; the payload has no CR or LF, so it echoes unchanged.
    { name: W4_COPY, argv: pool(b, "4", ["-c"]) },
    { name: W4_TIMEOUT, argv: pool(b, "4", ["--timeout", "30"]) },
  ];
}

/**
 * The network floor: a Bun event loop in a process of its own that echoes
 * the request with no program started (only for the idle turnaround,
 * where a reply always fits in one write).
 */
export const ECHO: Contender = {
  name: "no program (Bun echo server)",
  argv: (port) => [
    process.execPath,
    "-e",
    `Bun.listen({ hostname: "127.0.0.1", port: ${port}, allowHalfOpen: true, socket: { data: (s, d) => void s.write(d), end: (s) => void s.end() } })`,
  ],
};

/** Idle pools whose memory and idle CPU are measured, each alone. */
export function idlePools(b: Bench): Contender[] {
  return [
    { name: "socket -W 4", argv: pool(b, "4") },
    { name: "socket -W 64", argv: pool(b, "64") },
    { name: "socket -W 64 --prestart", argv: pool(b, "64", ["--prestart"]), feature: "--prestart" },
  ];
}

// --- servers -----------------------------------------------------------------

export interface Server {
  name: string;
  proc: Subprocess;
  port: number;
  /** Launch to the first answered connection, in ms. */
  readyMs: number;
  /** The cgroup it runs in when its CPU is measured (and one can be made). */
  cgroup?: Cgroup;
}

const running = new Set<Server>();

/** A port nobody listens on now: bind port 0, note the port, let go. */
export function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

const PING = new TextEncoder().encode("ready?"); // no LF, which -c would turn into CRLF

/** Ready when a connection is echoed (a server running `cat`). */
export const echoes = async (port: number) => (await exchange({ port }, PING, 2000)).ok;

/**
 * Starts a server in a process group of its own (so stopping it ends its
 * workers and programs too) and waits until `ready` says it answers.
 * `ready` null: does not wait (the launchers are checked through nginx).
 * `accounted`: in a cgroup of its own, whose CPU counts every process it
 * starts (the CPU tables' rows); the launch figures start servers without,
 * so that the wrapper's exec is not in them.
 */
export async function start(c: Contender, ready: ((port: number) => Promise<boolean>) | null = echoes, accounted = false): Promise<Server> {
  const port = freePort();
  const argv = c.argv(port);
  const cgroup = accounted ? makeCgroup() : undefined;
  const launched = performance.now();
  const proc = Bun.spawn(cgroup ? inCgroup(cgroup, argv) : argv, { stdio: ["ignore", "ignore", "inherit"], detached: true });
  const server: Server = { name: c.name, proc, port, readyMs: NaN, cgroup };
  running.add(server);
  if (!ready) return server;
  // Refused connections come back at once, so this polls about every ms.
  while (!(await ready(port))) {
    if (performance.now() - launched > 15_000 || proc.exitCode !== null) {
      await stop(server);
      throw new Error(`${argv.join(" ")} did not answer within 15 s`);
    }
    await Bun.sleep(1);
  }
  server.readyMs = performance.now() - launched;
  return server;
}

/** Kills a process group and waits (bounded) for its leader to go. */
export async function killGroup(proc: Subprocess): Promise<void> {
  try {
    process.kill(-proc.pid, "SIGKILL");
  } catch {
    // the group is already gone
  }
  // Bounded, and with a timer that does not keep the benchmark alive once done.
  let timer: Timer | undefined;
  await Promise.race([proc.exited, new Promise((resolve) => (timer = setTimeout(resolve, 5000).unref()))]);
  clearTimeout(timer);
}

export async function stop(server: Server): Promise<void> {
  running.delete(server);
  await killGroup(server.proc);
  if (server.cgroup) await removeCgroup(server.cgroup);
}

export const stopAll = async () => void (await Promise.all([...running].map(stop)));
