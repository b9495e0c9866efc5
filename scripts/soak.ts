// `npm run soak`: a long run through the pool. 20,000 connections (SOAK_COUNT
// to change it) through `dist/socket -p cat -W 8`, 16 at a time, each checked
// byte for byte; the master's and workers' open descriptors and RSS are
// printed at the start and the end, and must not grow; no zombie may appear.
// Bounded: it gives up after 10 minutes. Then, where nginx is installed, a
// FastCGI pool operated under load (soak-gateway.ts). Exit status 1 on any
// failure.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exchange } from "./bench/loadgen.ts";
import { soakGateway } from "./soak-gateway.ts";
import { noNginx } from "../test/gateway-peers.ts";

const SOCKET = join(import.meta.dir, "..", "dist", "socket");
const COUNT = Number(process.env.SOAK_COUNT ?? 20_000);
const CONCURRENCY = 16;
const DEADLINE_MS = 10 * 60 * 1000;

function statField(pid: number, index: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[index];
  } catch {
    return undefined;
  }
}

function children(pid: number): number[] {
  return readdirSync("/proc").filter((e) => /^\d+$/.test(e) && Number(statField(Number(e), 1)) === pid).map(Number);
}

function zombiesUnder(pids: number[]): number[] {
  return pids.flatMap(children).filter((pid) => statField(pid, 0) === "Z");
}

/**
 * Zombies that stay zombies: a program caught between its exit and its
 * worker's wait is one for an instant; one still unreaped 200 ms later is not.
 */
async function lastingZombies(pids: number[]): Promise<number> {
  const seen = zombiesUnder(pids);
  if (seen.length === 0) return 0;
  await Bun.sleep(200);
  return seen.filter((pid) => statField(pid, 0) === "Z").length;
}

function usage(pid: number): { fds: number; rssKB: number } {
  const rss = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+)/m)?.[1];
  return { fds: readdirSync(`/proc/${pid}/fd`).length, rssKB: Number(rss) };
}

function snapshot(master: number): { master: { fds: number; rssKB: number }; workers: { fds: number; rssKB: number }[] } {
  const workers = children(master).filter((pid) => statField(pid, 0) !== "Z");
  return { master: usage(master), workers: workers.map(usage) };
}

function describe(label: string, s: ReturnType<typeof snapshot>): void {
  const fds = s.workers.map((w) => w.fds);
  const rss = s.workers.map((w) => (w.rssKB / 1024).toFixed(1));
  console.log(`${label}: master ${s.master.fds} fds, ${(s.master.rssKB / 1024).toFixed(1)} MB RSS; workers fds [${fds}] RSS MB [${rss}]`);
}

const server = Bun.spawn([SOCKET, "-v", "-p", "cat", "-W", "8", "-B", "127.0.0.1", "-s", "0"], {
  stdio: ["ignore", "ignore", "pipe"],
  detached: true,
});
let failed = false;
try {
  const reader = server.stderr.getReader();
  let banner = "";
  while (!/port (\d+)/.test(banner)) banner += new TextDecoder().decode((await reader.read()).value);
  void (async () => {
    while (!(await reader.read()).done); // keep draining -v so the master never blocks on stderr
  })();
  const port = Number(banner.match(/port (\d+)/)![1]);
  while (children(server.pid).length < 8) await Bun.sleep(50);
  // Warm up, so the start figures are those of a pool that has served: 8 at
  // a time, so that every worker serves (one at a time, the kernel's
  // exclusive wakeup may hand them all to the same few workers, and a
  // worker opens a descriptor or two at its first connection).
  for (let i = 0; i < 25; i++) {
    await Promise.all(Array.from({ length: 8 }, (_, j) => exchange({ port }, new TextEncoder().encode(`warm ${i}.${j}`))));
  }
  const start = snapshot(server.pid);
  describe("start", start);

  const started = performance.now();
  let next = 0;
  let failures = 0;
  let zombies = 0;
  const lane = async () => {
    while (next < COUNT && performance.now() - started < DEADLINE_MS) {
      const i = next++;
      const payload = new TextEncoder().encode(`soak ${i} `.repeat(1 + (i % 50)));
      if (!(await exchange({ port }, payload)).ok) failures++;
      if (i === COUNT / 2) describe("half-way", snapshot(server.pid)); // growth past this point is a leak, not warm-up
      if (i % 1000 === 0) {
        zombies = Math.max(zombies, await lastingZombies([server.pid, ...children(server.pid)]));
        if (i > 0) console.log(`${i} connections, ${failures} failed, ${((performance.now() - started) / 1000).toFixed(0)} s`);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, lane));
  const seconds = (performance.now() - started) / 1000;
  await Bun.sleep(500); // let the last programs be reaped
  const end = snapshot(server.pid);
  describe("end", end);
  zombies = Math.max(zombies, await lastingZombies([server.pid, ...children(server.pid)]));

  const done = Math.min(next, COUNT);
  console.log(`${done} connections in ${seconds.toFixed(1)} s (${(done / seconds).toFixed(0)}/s), ${failures} failed, ${zombies} zombies seen`);
  const grew = end.master.fds > start.master.fds || end.workers.some((w, i) => w.fds > (start.workers[i]?.fds ?? Infinity));
  if (done < COUNT) console.log(`FAIL: only ${done} of ${COUNT} within ${DEADLINE_MS / 60000} minutes`);
  if (failures > 0) console.log("FAIL: some connections failed");
  if (zombies > 0) console.log("FAIL: a zombie appeared");
  if (grew) console.log("FAIL: open descriptors grew");
  failed = done < COUNT || failures > 0 || zombies > 0 || grew;
  if (!failed) console.log("PASS");
} finally {
  try {
    process.kill(-server.pid, "SIGKILL");
  } catch {
    // gone
  }
}

/** The gateway phase: every POST answered 200 through reloads, growth, shrinking and upgrades. */
async function gatewayPhase(): Promise<boolean> {
  if (noNginx) {
    console.log("gateway phase skipped: no nginx");
    return true;
  }
  const dir = mkdtempSync(join(tmpdir(), "soak-gateway-"));
  try {
    const r = await soakGateway(SOCKET, dir);
    console.log(`gateway: ${r.posts} POSTs through nginx (keepalive ${r.keepalive}) to --fastcgi -W ${r.workers} --max-requests 40, ${r.signals} signals (${r.upgrades} upgrades), ${r.failed} not 200`);
    for (const line of r.errors) console.log(`  nginx: ${line}`);
    const ok = r.failed === 0 && r.errors.length === 0 && r.upgrades > 0;
    console.log(ok ? "PASS" : "FAIL: a POST was lost, nginx logged an error, or no upgrade happened");
    return ok;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (!failed && !(await gatewayPhase())) failed = true;
process.exit(failed ? 1 : 0);
