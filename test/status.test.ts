// --status and --slow: the pool master's page read by real peers (curl,
// promtool), its figures checked under a known load of held connections.
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { exchange, run, signalEach, startServer, tempDir, waitFor, workersOf, type Server } from "./harness.ts";
import { fcgiRequest, freePort, scgiRequest } from "./gateway-peers.ts";

const PROMTOOL = Bun.which("promtool");

/** curl's answer: the body and the HTTP status (bounded: --max-time). */
async function curl(url: string, unix?: string): Promise<{ status: number; body: string }> {
  const args = ["curl", "-s", "--max-time", "3", "-w", "\n%{http_code}", ...(unix ? ["--unix-socket", unix] : []), url];
  const proc = Bun.spawn(args, { stdout: "pipe", stderr: "ignore" });
  const out = await new Response(proc.stdout).text();
  await proc.exited;
  const cut = out.lastIndexOf("\n");
  return { body: out.slice(0, cut), status: Number(out.slice(cut + 1)) };
}

/** Where the master said its page is (-v): http://127.0.0.1:PORT. */
async function statusBase(server: Server): Promise<string> {
  let base = "";
  await waitFor("the status page line", () => {
    base = server.stderr().match(/pool: status page on (http:\/\/[^/\s]+)\/status/)?.[1] ?? "";
    return base !== "";
  });
  return base.replace("0.0.0.0", "127.0.0.1");
}

type Page = Record<string, number | string> & { processes?: Record<string, number | string>[] };

async function page(base: string, query = "json"): Promise<Page> {
  const { status, body } = await curl(`${base}/status?${query}`);
  expect(status).toBe(200);
  return JSON.parse(body) as Page;
}

/** A client that connects and holds its connection until disposed. */
async function hold(port: number): Promise<AsyncDisposable> {
  const socket = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
  return { [Symbol.asyncDispose]: async () => void socket.terminate() };
}

describe("--status", () => {
  test("USR2 on a TCP status port: while the old master drains a request, every scrape gets the new master's page", async () => {
    using dir = tempDir();
    const pidFile = join(dir.path, "pid");
    const args = ["-W", "1", "--status", `127.0.0.1:${freePort()}`, "-p", "sh -c 'sleep 3; echo done'", "-s", "0", "--pid-file", pidFile];
    await using server = await startServer(args);
    const base = await statusBase(server);
    await waitFor("the pid file", () => existsSync(pidFile));
    const replying = exchange(server.target, "", { ms: 8000, halfClose: false });
    await waitFor("the old master's worker busy", async () => (await page(base))["active processes"] === 1);
    process.kill(server.proc.pid, "SIGUSR2");
    await waitFor("the handover", () => server.stderr().includes(`${server.proc.pid} drains and exits`));
    const successor = Number(readFileSync(pidFile, "utf8"));
    try {
      const accepted: unknown[] = [];
      for (let i = 0; i < 12; i++) accepted.push((await page(base))["accepted conn"]);
      expect(accepted).toEqual(Array(12).fill(0)); // the old master's page would say 1
      expect((await replying).data.toString()).toBe("done\n");
    } finally {
      signalEach([successor], "SIGKILL");
    }
  }, 20_000);

  test("curl reads /status, ?json, ?openmetrics (promtool accepts it) and /ping; accepted conn is N after N connections", async () => {
    await using server = await startServer(["-W", "2", "--status", "127.0.0.1:0", "-p", "cat", "-s", "0"]);
    const base = await statusBase(server);
    await waitFor("2 workers", () => workersOf(server.proc.pid).length === 2);
    for (let i = 0; i < 5; i++) expect((await exchange(server.target, `n${i}`)).data.toString()).toBe(`n${i}`);

    const text = await curl(`${base}/status`);
    expect(text.status).toBe(200);
    const field = (name: string) => text.body.match(new RegExp(`^${name}:\\s+(.*)$`, "m"))?.[1];
    expect(field("pool")).toBe(`0.0.0.0:${server.target}`);
    expect(field("process manager")).toBe("static");
    expect(field("accepted conn")).toBe("5");
    expect(field("total processes")).toBe("2");
    expect(field("start time")).toMatch(/^\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}$/);

    // Workers say idle after their connection: the master may hear it a moment after the client's end.
    await waitFor("both workers idle", async () => (await page(base))["idle processes"] === 2);
    const json = await page(base, "json&full");
    expect(json).toMatchObject({ "accepted conn": 5, "active processes": 0, "total processes": 2, "workers started": 2, "listen queue": 0 });
    expect(json["listen queue len"]).toBeGreaterThan(0);
    expect(json.processes?.map((p) => p.pid).sort()).toEqual(workersOf(server.proc.pid).sort());
    expect(json.processes?.reduce((n, p) => n + Number(p.requests), 0)).toBe(5);

    const metrics = await curl(`${base}/status?openmetrics&full`);
    expect(metrics.body).toContain("\nsocket_accepted_connections_total 5\n");
    expect(metrics.body).toContain("# TYPE socket_accepted_connections_total counter\n");
    expect(metrics.body.endsWith("# EOF\n")).toBe(true);
    if (PROMTOOL) {
      const check = Bun.spawnSync([PROMTOOL, "check", "metrics"], { stdin: new Blob([metrics.body]), stderr: "pipe", stdout: "pipe" });
      expect(check.stderr.toString() + check.stdout.toString()).toBe("");
      expect(check.exitCode).toBe(0);
    } else {
      console.warn("promtool missing (Debian package prometheus): metrics page not checked by it");
    }

    expect(await curl(`${base}/ping`)).toEqual({ status: 200, body: "pong\n" });
    expect((await curl(`${base}/nothing`)).status).toBe(404);
  }, 20_000);

  test("-W 2 with 4 held clients: 2 active, 2 in the listen queue, /ping 503; max children reached grows", async () => {
    await using server = await startServer(["-W", "2", "--status", "127.0.0.1:0", "-p", "cat", "-s", "0"]);
    const base = await statusBase(server);
    await waitFor("2 workers", () => workersOf(server.proc.pid).length === 2);
    const port = server.target as number;
    await using a = await hold(port);
    await using b = await hold(port);
    await using c = await hold(port);
    await using d = await hold(port);
    let last: Page = {};
    await waitFor("2 active, 2 waiting", async () => {
      last = await page(base);
      return last["active processes"] === 2 && last["listen queue"] === 2;
    });
    expect(last).toMatchObject({ "idle processes": 0, "total processes": 2, "max active processes": 2 });
    expect(Number(last["max listen queue"])).toBeGreaterThanOrEqual(2);
    expect(await curl(`${base}/ping`)).toMatchObject({ status: 503 });
    await waitFor("max children reached", async () => Number((await page(base))["max children reached"]) >= 1);
  }, 20_000);

  test("-W 1:2 with 3 held clients: dynamic, and max children reached grows", async () => {
    await using server = await startServer(["-W", "1:2", "--status", "127.0.0.1:0", "-p", "cat", "-s", "0"]);
    const base = await statusBase(server);
    const before = await page(base);
    expect(before).toMatchObject({ "process manager": "dynamic", "max children reached": 0 });
    const port = server.target as number;
    await using a = await hold(port);
    await using b = await hold(port);
    await using c = await hold(port);
    await waitFor("the pool at MAX with a connection waiting", async () => {
      const now = await page(base);
      return now["active processes"] === 2 && Number(now["max children reached"]) >= 1;
    });
  }, 20_000);

  test("a program that exits 127 counts as a failed program; the page answers on a UNIX path, removed at exit", async () => {
    using dir = tempDir();
    const path = join(dir.path, "status.sock");
    await using server = await startServer(["-W", "1", "--status", path, "-p", "no-such-program-here", "-s", "0"]);
    await waitFor("the status socket", () => existsSync(path));
    await exchange(server.target, "");
    await waitFor("failed programs 1", async () => {
      const { body } = await curl("http://status/status?json", path);
      return JSON.parse(body)["failed programs"] === 1;
    });
    expect((await curl("http://status/ping", path)).body).toBe("pong\n");
    server.proc.kill("SIGTERM");
    await server.exited();
    expect(existsSync(path)).toBe(false);
  }, 20_000);

  for (const protocol of ["fastcgi", "scgi"] as const) {
    test(`--${protocol}: a CGI that cannot be executed counts as a failed program`, async () => {
      using dir = tempDir();
      const script = join(dir.path, "noexec.cgi");
      await Bun.write(script, "#!/bin/sh\necho never\n"); // mode 644: posix_spawn fails with EACCES
      await using server = await startServer(["-W", "1", `--${protocol}`, "--status", "127.0.0.1:0", "-p", script, "-s", "0"]);
      const base = await statusBase(server);
      const vars: [string, string][] = [["CONTENT_LENGTH", "0"], ["REQUEST_METHOD", "GET"], ["REQUEST_URI", "/x"]];
      const request = protocol === "scgi" ? scgiRequest([vars[0], ["SCGI", "1"], ...vars.slice(1)]) : fcgiRequest(1, vars);
      expect((await exchange(server.target, request)).data.toString("latin1")).toContain("Status: 502 Bad Gateway");
      await waitFor("failed programs 1", async () => (await page(base))["failed programs"] === 1);
      expect(server.stderr()).toContain(`socket: cannot run ${script}: permission denied`);
    }, 20_000);
  }

  test("--status needs -W; a bad address is a usage error", async () => {
    expect((await run(["--status", "9000", "-s", "-p", "cat", "0"])).status).toBe(15);
    const bad = await run(["--status", "nope", "-W", "1", "-s", "-p", "cat", "0"]);
    expect(bad.status).toBe(15);
    expect(bad.stderr).toStartWith("socket: --status wants a /path, a PORT or HOST:PORT, not 'nope'\n");
  });
});

describe("--slow", () => {
  test("a 2-second connection is logged once, and counted as a slow request", async () => {
    await using server = await startServer(["-W", "1", "--slow", "1", "--status", "127.0.0.1:0", "-p", "sleep 2", "-s", "0"]);
    const base = await statusBase(server);
    await exchange(server.target, "");
    const [worker] = workersOf(server.proc.pid);
    const lines = server.stderr().match(/slow: .*/g) ?? [];
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^slow: worker ${worker}: connection still running after 1\\.\\d s$`));
    expect((await page(base))["slow requests"]).toBe(1);
  }, 20_000);

  test("--scgi: the slow line and ?full name the request's method and URI", async () => {
    using dir = tempDir();
    const script = join(dir.path, "slow.sh");
    await Bun.write(script, "#!/bin/sh\nsleep 1.5\nprintf 'Status: 200 OK\\r\\n\\r\\ndone'\n");
    Bun.spawnSync(["chmod", "755", script]);
    await using server = await startServer(["-W", "1", "--scgi", "--slow", "0.5", "--status", "127.0.0.1:0", "-p", script, "-s", "0"]);
    const base = await statusBase(server);
    const request = scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"], ["REQUEST_METHOD", "GET"], ["REQUEST_URI", "/slow?x=1"]]);
    expect((await exchange(server.target, request)).data.toString()).toContain("done");
    expect(server.stderr().match(/slow: .*/g)).toEqual([expect.stringMatching(/^slow: worker \d+: connection still running after 0\.\d s \(GET \/slow\?x=1\)$/)]);
    const [worker] = (await page(base, "json&full")).processes ?? [];
    expect(worker).toMatchObject({ "request method": "GET", "request uri": "/slow?x=1", requests: 1 });
  }, 20_000);

  test("the classic server says it too", async () => {
    await using server = await startServer(["-l", "--slow", "0.5", "-p", "sleep 1", "-s", "0"]);
    await exchange(server.target, "");
    expect(server.stderr().match(/slow: .*/g)).toEqual(["slow: connection from 127.0.0.1 still running after 0.5 s"]);
  });
});
