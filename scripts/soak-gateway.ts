// `npm run soak`'s second phase: a FastCGI pool operated under load, as an
// operator runs one. nginx keeps its connections to `--fastcgi -W 8
// --max-requests 40` (fastcgi_keep_conn, upstream keepalive 8, as many as the POST loops; SOAK_KEEPALIVE
// sets it: more than the pool makes workers close kept connections) while 8 POST
// loops run and the pool is sent, round after round, HUP, TTIN, TTIN,
// TTOU, HUP and USR2 (the upgrade: a new master on the same socket). POSTs
// are what nginx does not retry on another connection: every one must be
// answered 200. Bounded by SOAK_GATEWAY_S seconds (default 60); SOAK_BETWEEN
// answers between two signals (default 150).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { startNginx } from "../test/gateway-peers.ts";

const SECONDS = Number(process.env.SOAK_GATEWAY_S ?? 60);
/** The pool's size and nginx's kept connections: as the man page advises (keepalive no larger than the pool) unless SOAK_KEEPALIVE says otherwise. */
const WORKERS = 8;
const KEEPALIVE = Number(process.env.SOAK_KEEPALIVE ?? WORKERS);
const SIGNALS = ["SIGHUP", "SIGTTIN", "SIGTTIN", "SIGTTOU", "SIGHUP", "SIGUSR2"] as const;
/** Answers between two signals (SOAK_BETWEEN): each change lands under load. */
const BETWEEN = Number(process.env.SOAK_BETWEEN ?? 150);

export interface GatewaySoak {
  posts: number;
  failed: number;
  signals: number;
  upgrades: number;
  errors: string[];
  workers: number;
  keepalive: number;
}

/** The master serving now: the pid file's, which a USR2 successor rewrites once it serves. */
function masterPid(pidFile: string): number | undefined {
  const text = existsSync(pidFile) ? readFileSync(pidFile, "utf8").trim() : "";
  return text === "" ? undefined : Number(text);
}

export async function soakGateway(socket: string, dir: string): Promise<GatewaySoak> {
  const pidFile = join(dir, "pid");
  const cgi = join(dir, "post.cgi");
  await Bun.write(cgi, `#!/bin/sh\nhead -c "$CONTENT_LENGTH" > /dev/null\nprintf 'Content-Type: text/plain\\r\\n\\r\\nstored\\n'\n`);
  Bun.spawnSync(["chmod", "755", cgi]);
  const port = 20000 + Math.floor(Math.random() * 20000);
  const server = Bun.spawn([socket, "--fastcgi", "-W", String(WORKERS), "--max-requests", "40", "--pid-file", pidFile, "-B", "127.0.0.1", "-s", String(port), "-p", cgi], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const result: GatewaySoak = { posts: 0, failed: 0, signals: 0, upgrades: 0, errors: [], workers: WORKERS, keepalive: KEEPALIVE };
  const end = Date.now() + SECONDS * 1000;
  try {
    while (masterPid(pidFile) === undefined && Date.now() < end) await Bun.sleep(20);
    await using nginx = await startNginx(dir, "fastcgi", port, { keepConn: true, keepalive: KEEPALIVE });
    const body = "x".repeat(4000);
    const post = async () => {
      while (Date.now() < end) {
        // A reset or a timeout counts as a lost POST, as a 502 does.
        const status = await nginx
          .fetch("/store", { method: "POST", body, signal: AbortSignal.timeout(15_000) })
          .then(async (response) => (await response.text(), response.status))
          .catch(() => 0);
        result.posts++;
        if (status !== 200) result.failed++;
      }
    };
    const operate = async () => {
      for (let i = 0; Date.now() < end; i++) {
        const goal = result.posts + BETWEEN;
        while (result.posts < goal && Date.now() < end) await Bun.sleep(10);
        const master = masterPid(pidFile);
        if (master === undefined || Date.now() >= end) break;
        const signal = SIGNALS[i % SIGNALS.length];
        process.kill(master, signal);
        result.signals++;
        if (signal !== "SIGUSR2") continue;
        // The upgrade is done when the pid file names the successor.
        while (masterPid(pidFile) === master && Date.now() < end) await Bun.sleep(20);
        if (masterPid(pidFile) !== master) result.upgrades++;
      }
    };
    await Promise.all([...Array.from({ length: 8 }, post), operate()]);
    result.errors = nginx.errorLog().split("\n").filter((l) => l.includes("[error]")).slice(0, 5);
  } finally {
    const master = masterPid(pidFile);
    for (const pid of [master, server.pid]) {
      try {
        if (pid !== undefined) process.kill(pid, "SIGTERM");
      } catch {
        // gone
      }
    }
  }
  return result;
}
