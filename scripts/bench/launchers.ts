// The launchers' scenario: nginx (Debian's package) in front of socket,
// which runs a small C CGI per request, as socket's users run it.
// `scgi_pass` to `socket ... -p "WRAPPER CGI"` (WRAPPER: scgi-wrapper.c,
// reading the SCGI header and exec'ing the CGI), and, when the build has
// them, socket's own --scgi and --fastcgi (nginx `fastcgi_pass`) with no
// wrapper; beside those, the gateways socket's users compare it with:
// fcgiwrap (FastCGI) and uWSGI's CGI plugin (SCGI), both Debian's, running
// the same CGI. nginx runs from a temporary directory and is stopped at the end.
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { Built } from "./builds.ts";
import { LAUNCHER_CONCURRENCY, ROUND_S } from "./config.ts";
import { httpGet, type Outcome, type Run } from "./loadgen.ts";
import { freePort, killGroup, type Bench, type Contender } from "./scenarios.ts";

/** How nginx reaches the contender. */
export type Protocol = "scgi" | "fastcgi" | "none";

export interface Launcher extends Contender {
  protocol: Protocol;
  /** nginx's `fastcgi_param SCRIPT_FILENAME`: fcgiwrap runs the program it names (socket's -p ignores it). */
  script?: string;
}

export interface Programs {
  wrapper: string;
  cgi: string;
  /** A CGI that writes its header before it reads the body (as git-http-backend does), then the body's sha256. */
  hashFirst: string;
}

/** The header-first CGI; a shell script, as test/body.test.ts's. */
const HASH_FIRST_CGI = `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nhead -c "$CONTENT_LENGTH" | sha256sum\n`;

/** Compiles scripts/bench/`source` to `binary` with `cc -O2`; a reason when it cannot. */
export function compileC(source: string, binary: string): string | undefined {
  const cc = ["cc", "gcc"].find((c) => Bun.which(c));
  if (!cc) return "no C compiler (cc or gcc; scripts/install-bench-deps.sh installs gcc)";
  const r = Bun.spawnSync([cc, "-O2", "-o", binary, join(import.meta.dir, source)], { stderr: "pipe" });
  return r.exitCode === 0 ? undefined : `${cc} failed on ${source}: ${r.stderr.toString().trim().split("\n")[0]}`;
}

/** Compiles the wrapper and the CGI into the scratch directory; a reason when it cannot. */
export function compilePrograms(b: Bench): Programs | string {
  const out: Programs = { wrapper: join(b.scratch, "scgi-wrapper"), cgi: join(b.scratch, "hello-cgi"), hashFirst: join(b.scratch, "hash-first.cgi") };
  writeFileSync(out.hashFirst, HASH_FIRST_CGI);
  chmodSync(out.hashFirst, 0o755);
  for (const [source, binary] of [["scgi-wrapper.c", out.wrapper], ["hello-cgi.c", out.cgi]]) {
    const why = compileC(source, binary);
    if (why) return why;
  }
  return out;
}

export const F_Q = "socket -f -q, wrapper";
export const W4_Q = "socket -W 4 -q, wrapper";
export const W4_NO_Q = "socket -W 4 (no -q), wrapper";
export const W4_Q_PRESTART = "socket -W 4 -q --prestart, wrapper";
export const SCGI = "socket --scgi -W 4";
export const FASTCGI = "socket --fastcgi -W 4";
export const FCGIWRAP = "fcgiwrap -c 4";
export const UWSGI = "uWSGI CGI plugin, 4 processes";
/** The build the gateways are compared with, "today's main" when the FastCGI core was merged into one. */
export const BASELINE_COMMIT = "d25ed5d";
export const BASELINE_SUFFIX = ` (${BASELINE_COMMIT})`;
export const SCGI_BASELINE = SCGI + BASELINE_SUFFIX;
export const FASTCGI_BASELINE = FASTCGI + BASELINE_SUFFIX;
export const NGINX_ALONE = "nginx alone (return 200, no upstream)";
/** The gateways that hold a request's body or the answer whole: the 5 MB POST to the header-first CGI. */
export const BODY_SUFFIX = ", header-first CGI";

/**
 * The gateways running one CGI: socket's --scgi and --fastcgi, fcgiwrap
 * (-c 4: four preforked processes, as -W 4) and uWSGI's CGI plugin on an
 * SCGI socket (--scgi-modifier1 9 sends every request to the CGI plugin;
 * --cgi names the one program; --processes 4 under a master).
 */
export function gateways(b: Bench, cgi: string, suffix = ""): Launcher[] {
  return [
    { name: SCGI + suffix, protocol: "scgi", feature: "--scgi", argv: (port) => [b.socket, "--scgi", "-W", "4", "-B", "127.0.0.1", "-s", String(port), "-p", cgi] },
    { name: FASTCGI + suffix, protocol: "fastcgi", feature: "--fastcgi", argv: (port) => [b.socket, "--fastcgi", "-W", "4", "-B", "127.0.0.1", "-s", String(port), "-p", cgi] },
    { name: FCGIWRAP + suffix, protocol: "fastcgi", needs: "fcgiwrap", script: cgi, argv: (port) => ["fcgiwrap", "-c", "4", "-s", `tcp:127.0.0.1:${port}`] },
    {
      name: UWSGI + suffix,
      protocol: "scgi",
      needs: "uwsgi",
      argv: (port) => ["uwsgi", "--plugin", "cgi", "--scgi-socket", `127.0.0.1:${port}`, "--scgi-modifier1", "9", "--cgi", cgi, "--master", "--processes", "4", "--disable-logging", "--die-on-term"],
    },
  ];
}

/**
 * socket's gateways again, run by the baseline build (BASELINE_COMMIT):
 * the same command lines side by side in the same rounds, so a change to
 * the gateways is read as a ratio against the code it replaced.
 */
export function baselineGateways(b: Bench, cgi: string, baseline: Built): Launcher[] {
  const socket = "path" in baseline ? baseline.path : b.socket;
  const ours = gateways({ ...b, socket }, cgi, BASELINE_SUFFIX).filter((c) => c.name.startsWith("socket "));
  return ours.map((c) => ({ ...c, feature: undefined, skip: "why" in baseline ? baseline.why : undefined }));
}

/** The launchers' command lines: the issue's line, without -W, without -q, with --prestart, the gateways and the baseline's. */
export function launcherContenders(b: Bench, p: Programs, baseline: Built): Launcher[] {
  const line = (extra: string[]) => (port: number) => [b.socket, "-B", "127.0.0.1", "-s", String(port), ...extra, "-l", "-p", `${p.wrapper} ${p.cgi}`];
  return [
    { name: F_Q, protocol: "scgi", argv: line(["-f", "-q"]) },
    { name: W4_Q, protocol: "scgi", argv: line(["-f", "-q", "-W", "4"]) },
    { name: W4_NO_Q, protocol: "scgi", argv: line(["-f", "-W", "4"]) },
    { name: W4_Q_PRESTART, protocol: "scgi", argv: line(["-f", "-q", "-W", "4", "--prestart"]), feature: "--prestart" },
    ...gateways(b, p.cgi),
    ...baselineGateways(b, p.cgi, baseline),
  ];
}

export interface Nginx {
  proc: Subprocess;
  dir: string;
  /** nginx's port for each upstream, in the order given; the last is nginx alone. */
  ports: number[];
}

/**
 * nginx in one process (master_process off), from its own directory, one
 * `server` per upstream on a free 127.0.0.1 port, plus one that answers
 * by itself (the floor). New connection to the upstream per request (no
 * keepalive), as nginx does by default.
 */
export async function startNginx(b: Bench, upstreams: { protocol: Protocol; port: number; script?: string }[]): Promise<Nginx> {
  const dir = join(b.scratch, "nginx");
  mkdirSync(dir, { recursive: true });
  const all: { protocol: Protocol; port: number; script?: string }[] = [...upstreams, { protocol: "none", port: 0 }];
  const ports = all.map(() => freePort());
  const location = (u: { protocol: Protocol; port: number; script?: string }) =>
    u.protocol === "scgi"
      ? `include /etc/nginx/scgi_params; scgi_pass 127.0.0.1:${u.port};`
      : u.protocol === "fastcgi"
        ? `include /etc/nginx/fastcgi_params;${u.script ? ` fastcgi_param SCRIPT_FILENAME ${u.script};` : ""} fastcgi_pass 127.0.0.1:${u.port};`
        : `default_type text/plain; return 200 "hello\\n";`;
  const conf = `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  # The 5 MB POST (the default limit is 1 MB); the small POSTs stay in memory.
  client_max_body_size 16m;
  client_body_buffer_size 128k;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  scgi_temp_path ${dir}/scgi;
  uwsgi_temp_path ${dir}/uwsgi;
${all.map((u, i) => `  server { listen 127.0.0.1:${ports[i]}; location / { ${location(u)} } }`).join("\n")}
}
`;
  writeFileSync(join(dir, "nginx.conf"), conf);
  const proc = Bun.spawn(["nginx", "-p", dir, "-c", join(dir, "nginx.conf"), "-e", join(dir, "error.log")], {
    stdio: ["ignore", "ignore", "inherit"],
    detached: true,
  });
  const until = performance.now() + 10_000;
  while (!(await httpGet(ports[ports.length - 1], "/", 1000)).ok) {
    if (proc.exitCode !== null || performance.now() > until) {
      await killGroup(proc);
      throw new Error(`nginx did not start (see ${dir}/error.log)`);
    }
    await Bun.sleep(20);
  }
  return { proc, dir, ports };
}

/** Waits until a request through nginx gets the CGI's answer; the last failure when it never does. */
export async function answers(port: number, seconds = 15): Promise<Outcome> {
  const until = performance.now() + seconds * 1000;
  for (;;) {
    const o = await httpGet(port, "/", 2000);
    if (o.ok || performance.now() > until) return o;
    await Bun.sleep(20);
  }
}

export interface Requests {
  requests: number;
  seconds: number;
  /** Non-2xx answers and socket errors (wrk), or failed requests (own loop). */
  failures: number;
  firstError: string;
}

const wrkSeconds = (value: string, unit: string) => Number(value) * (unit === "ms" ? 0.001 : unit === "m" ? 60 : unit === "us" ? 1e-6 : 1);

/**
 * One round of LAUNCHER_CONCURRENCY requests at a time through nginx for
 * ROUND_S: wrk (-c 8 -t 2, keep-alive to nginx; nginx opens a new
 * connection to the upstream per request), or without wrk our own closed
 * loop of HTTP/1.0 requests.
 */
export async function requestsRound(port: number): Promise<Requests> {
  if (!Bun.which("wrk")) {
    const run: Run = await httpLoop(port, LAUNCHER_CONCURRENCY, ROUND_S);
    const failed = run.outcomes.filter((o) => !o.ok);
    return { requests: run.outcomes.length - failed.length, seconds: run.seconds, failures: failed.length, firstError: failed[0]?.error ?? "" };
  }
  const proc = Bun.spawn(["wrk", "-c", String(LAUNCHER_CONCURRENCY), "-t", "2", "-d", `${ROUND_S}s`, `http://127.0.0.1:${port}/`], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = [await new Response(proc.stdout).text(), await new Response(proc.stderr).text()];
  await proc.exited;
  const done = out.match(/(\d+) requests in ([\d.]+)(us|ms|s|m)\b/);
  if (!done) return { requests: 0, seconds: ROUND_S, failures: 1, firstError: `wrk: ${(err || out).trim().split("\n")[0]}` };
  const non2xx = Number(out.match(/Non-2xx or 3xx responses:\s+(\d+)/)?.[1] ?? 0);
  const socketErrors = out.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/)?.slice(1).reduce((s, v) => s + Number(v), 0) ?? 0;
  const failures = non2xx + socketErrors;
  return {
    requests: Number(done[1]) - non2xx,
    seconds: wrkSeconds(done[2], done[3]),
    failures,
    firstError: failures ? `wrk: ${non2xx} non-2xx, ${socketErrors} socket errors` : "",
  };
}

/** loadgen's closedLoop, with HTTP/1.0 requests through nginx. */
async function httpLoop(port: number, concurrency: number, seconds: number): Promise<Run> {
  const outcomes: Outcome[] = [];
  const started = performance.now();
  const end = started + seconds * 1000;
  const lane = async () => {
    while (performance.now() < end) outcomes.push(await httpGet(port));
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return { outcomes, seconds: (performance.now() - started) / 1000 };
}
