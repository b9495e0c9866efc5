// The status page against clients that misbehave: probes without Host,
// malformed requests, slow and numerous connections under a low descriptor
// limit, peers --allow/--deny refuse; and where it listens (loopback for a
// bare PORT) and whose its UNIX socket file is (-u, --mode).
import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Socket } from "bun";
import { connectionCap, DEADLINE_MS, MOST_CONNECTIONS, parseRequest, responseBytes } from "../src/pool/status-http.ts";
import { exchange, run, startServer, tempDir, waitFor, workersOf, type Server } from "./harness.ts";

/** The page's port, from the master's -v line. */
async function statusPort(server: Server): Promise<number> {
  let port = 0;
  await waitFor("the status page line", () => {
    port = Number(server.stderr().match(/pool: status page on http:\/\/[^/\s]+:(\d+)\/status/)?.[1] ?? 0);
    return port !== 0;
  });
  return port;
}

/** Bytes sent as they are (the client half-closes after them); the whole answer, as text. */
async function raw(port: number, request: string): Promise<string> {
  return (await exchange(port, request)).data.toString("latin1");
}

/** The TCP sockets listening on `port` (/proc/net/tcp and tcp6): their local addresses, as the kernel writes them. */
function listeningOn(port: number): string[] {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const found: string[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of readFileSync(file, "utf8").split("\n").slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/);
      if (state === "0A" && local?.endsWith(`:${hex}`)) found.push(local.slice(0, local.lastIndexOf(":")));
    }
  }
  return found;
}

/** A port the kernel had free a moment ago. */
function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

/**
 * `count` clients that connect to the page, send one byte and hold on; a
 * connection that is closed connects again (after `pauseMs`), as an
 * attacker would. Disposing ends them all.
 */
function crowd(port: number, count: number, pauseMs = 50): { opened: () => number } & AsyncDisposable {
  let stopped = false;
  let opened = 0;
  const live = new Set<Socket<undefined>>();
  const one = () => {
    if (stopped) return;
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open: (s) => {
          if (stopped) return void s.terminate(); // connected after the end
          live.add(s);
          opened++;
          s.write("G");
        },
        data() {},
        close: (s) => {
          live.delete(s);
          setTimeout(one, pauseMs);
        },
        connectError: () => void setTimeout(one, pauseMs),
      },
    }).catch(() => setTimeout(one, pauseMs));
  };
  for (let i = 0; i < count; i++) one();
  return {
    opened: () => opened,
    [Symbol.asyncDispose]: async () => {
      stopped = true;
      for (const s of live) s.terminate();
    },
  };
}

describe("the page's HTTP parser and its connection cap", () => {
  test("HTTP/1.0 needs no Host; a Host with a space, two Hosts, HTTP/1.1 without Host, a bad line are refused", () => {
    const ok = parseRequest("GET /ping HTTP/1.0");
    expect(typeof ok === "object" && ok.url.pathname).toBe("/ping");
    const absolute = parseRequest("GET http://example.org/status?json HTTP/1.1\r\nHost: example.org");
    expect(typeof absolute === "object" && absolute.url.searchParams.has("json")).toBe(true);
    expect(typeof parseRequest("GET /ping HTTP/1.1\r\nHost: [::1]:9101")).toBe("object");
    expect(parseRequest("GET /ping HTTP/1.1\r\nHost: a b")).toBe("a malformed Host");
    expect(parseRequest("GET /ping HTTP/1.1\r\nHost: a\r\nHost: b")).toBe("more than one Host");
    expect(parseRequest("GET /ping HTTP/1.1")).toBe("HTTP/1.1 without Host");
    expect(parseRequest("GET /ping HTTP/1.0\r\nno colon here")).toBe("a malformed header field");
    expect(parseRequest("GET  /ping HTTP/1.0")).toBe("not an HTTP/1.0 or 1.1 request line");
    expect(parseRequest("GET ping HTTP/1.0")).toBe("a malformed request target");
    expect(parseRequest("\x16\x03\x01 TLS")).toBe("not an HTTP/1.0 or 1.1 request line");
  });

  test("HEAD gets the header with GET's Content-Length and no body; 405 says Allow", () => {
    const pong = { status: 200, body: "pong\n", type: "text/plain" };
    expect(responseBytes(pong, true).toString()).toBe(
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
    );
    expect(responseBytes(pong, false).toString()).toEndWith("\r\n\r\npong\n");
    expect(responseBytes({ status: 405, body: "only GET\n", type: "text/plain", allow: "GET, HEAD" }, false).toString()).toContain("\r\nAllow: GET, HEAD\r\n");
  });

  test("the cap leaves the pool its descriptors: the limit less 32 and 6 per worker, at most 64, at least 1", () => {
    expect(connectionCap(1024, 4)).toBe(MOST_CONNECTIONS);
    expect(connectionCap(64, 2)).toBe(64 - 32 - 12);
    expect(connectionCap(64, 16)).toBe(1);
  });
});

describe("--status against misbehaving clients", () => {
  test("an HTTP/1.0 probe without Host gets pong; Host: a b gets a short 400, and 40 of them at most a line a second", async () => {
    await using server = await startServer(["-W", "1", "--status", "127.0.0.1:0", "-p", "cat", "-s", "0"]);
    const port = await statusPort(server);
    await waitFor("1 worker", () => workersOf(server.proc.pid).length === 1);
    await waitFor("pong", async () => (await raw(port, "GET /ping HTTP/1.0\r\n\r\n")).endsWith("\r\n\r\npong\n"));
    expect(await raw(port, "GET /ping HTTP/1.0\r\n\r\n")).toStartWith("HTTP/1.1 200 OK\r\n");

    const before = server.stderr().length;
    const started = Date.now();
    const answers = await Promise.all(Array.from({ length: 40 }, () => raw(port, "GET /ping HTTP/1.1\r\nHost: a b\r\n\r\n")));
    const seconds = (Date.now() - started) / 1000;
    for (const a of answers) {
      expect(a).toStartWith("HTTP/1.1 400 Bad Request\r\n");
      expect(a.length).toBeLessThan(400);
      expect(a).not.toMatch(/<html|\bat \S+ \(|\.ts:\d+/i);
    }
    // The line may come a moment after the answer.
    await waitFor("the line", () => server.stderr().slice(before).includes("status page: a malformed Host from 127.0.0.1: answered 400"));
    const lines = server.stderr().slice(before).split("\n").filter((l) => l !== "");
    expect(lines.every((l) => l.startsWith("socket: status page: a malformed Host"))).toBe(true);
    expect(lines.length).toBeLessThanOrEqual(Math.ceil(seconds) + 1);

    expect(await raw(port, `GET /ping HTTP/1.0\r\nX: ${"a".repeat(9000)}`)).toStartWith("HTTP/1.1 431 ");
  }, 20_000);

  test("a client that sends a byte every 0.2 s is cut at the deadline", async () => {
    await using server = await startServer(["-W", "1", "--status", "127.0.0.1:0", "-p", "cat", "-s", "0"]);
    const port = await statusPort(server);
    const started = Date.now();
    let drip: Timer | undefined;
    const closed = new Promise<number>((resolve) => {
      void Bun.connect({
        hostname: "127.0.0.1",
        port,
        socket: {
          open: (s) => {
            s.write("GET /ping HTTP/1.0\r\nX-Slow: ");
            drip = setInterval(() => s.write("a"), 200);
          },
          data() {},
          close: () => resolve(Date.now() - started),
        },
      });
    });
    const bound = Bun.sleep(DEADLINE_MS + 4000).then(() => -1);
    const took = await Promise.race([closed, bound]);
    clearInterval(drip);
    expect(took).toBeGreaterThanOrEqual(DEADLINE_MS - 500);
    expect(took).toBeLessThan(DEADLINE_MS + 2000);
  }, 20_000);

  test("under ulimit -n 64, 80 clients holding the page: HUP and --max-requests still replace workers, none runs out of descriptors", async () => {
    const wrap = ["sh", "-c", 'ulimit -n 64 && exec "$@"', "sh"];
    await using server = await startServer(["-W", "2", "--max-requests", "1", "--status", "127.0.0.1:0", "-p", "echo served", "-s", "0"], { wrap });
    const port = await statusPort(server);
    const master = server.proc.pid;
    await waitFor("2 workers", () => workersOf(master).length === 2);
    // Over the cap (20 here), a connection is closed as it is accepted, and its client connects again.
    await using attack = crowd(port, 80);
    await waitFor("the crowd connected", () => attack.opened() >= 80, 10_000);
    // The master keeps descriptors for its workers: at most the cap's and its own are open.
    expect(readdirSync(`/proc/${master}/fd`).length).toBeLessThanOrEqual(64 - 16);

    const old = workersOf(master);
    process.kill(master, "SIGHUP");
    await waitFor("2 new workers", () => {
      const now = workersOf(master);
      return now.length === 2 && now.every((pid) => !old.includes(pid));
    }, 10_000);
    for (let i = 0; i < 4; i++) expect((await exchange(server.target, "")).data.toString()).toBe("served\n");
    await waitFor("the 4 served workers replaced", () => (server.stderr().match(/worker \d+ started/g) ?? []).length >= 8, 10_000);
    expect(server.stderr()).not.toMatch(/Too many open files|cannot start a worker/);
    expect(server.stderr()).toContain("socket: status page: 20 connections open, the most it holds: closing more\n");
  }, 30_000);
});

describe("--status: where and for whom", () => {
  test("a bare PORT listens on 127.0.0.1 only", async () => {
    const port = freePort();
    await using server = await startServer(["-W", "1", "--status", String(port), "-p", "cat", "-s", "0"]);
    await statusPort(server);
    expect(listeningOn(port)).toEqual(["0100007F"]);
    expect(await raw(port, "GET /ping HTTP/1.0\r\n\r\n")).toStartWith("HTTP/1.1 ");
  });

  test.each(["nosuch.invalid", "999.1.2.3", "a b"])("HOST %p that does not resolve: 'unknown host', exit 13, as -B's", async (host) => {
    expect(await run(["-W", "1", "--status", `${host}:0`, "-p", "cat", "-s", "0"])).toMatchObject({ status: 13, stderr: `socket: unknown host ${host}\n` });
  });

  test("HOST a name: its address (localhost is 127.0.0.1)", async () => {
    await using server = await startServer(["-W", "1", "--status", "localhost:0", "-p", "cat", "-s", "0"]);
    await waitFor("the page's line", () => /status page on http:\/\/127\.0\.0\.1:\d+\/status/.test(server.stderr()));
  });

  test("--allow applies to the page: 127.0.0.1 is closed unanswered, an allowed 127.0.0.2 is served", async () => {
    await using server = await startServer(["-W", "1", "--status", "127.0.0.1:0", "--allow", "10.0.0.0/8", "--allow", "127.0.0.2", "-p", "cat", "-s", "0"]);
    const port = await statusPort(server);
    await waitFor("1 worker", () => workersOf(server.proc.pid).length === 1);
    // Closed as accepted: the client sees an empty answer, or a reset before its connect completed.
    const refused = await exchange(port, "GET /ping HTTP/1.0\r\n\r\n").then((r) => r.data.toString(), () => "");
    expect(refused).toBe("");
    const from2 = () => Bun.spawnSync(["curl", "-s", "--max-time", "3", "--interface", "127.0.0.2", `http://127.0.0.1:${port}/ping`]).stdout.toString();
    await waitFor("pong for 127.0.0.2 (once the worker waits)", () => from2() === "pong\n");
  });

  test("--deny applies to the page: a denied 127.0.0.1 is closed unanswered, 127.0.0.2 is served", async () => {
    await using server = await startServer(["-W", "1", "--status", "127.0.0.1:0", "--deny", "127.0.0.1", "-p", "cat", "-s", "0"]);
    const port = await statusPort(server);
    await waitFor("1 worker", () => workersOf(server.proc.pid).length === 1);
    const refused = await exchange(port, "GET /ping HTTP/1.0\r\n\r\n").then((r) => r.data.toString(), () => "");
    expect(refused).toBe("");
    const from2 = () => Bun.spawnSync(["curl", "-s", "--max-time", "3", "--interface", "127.0.0.2", `http://127.0.0.1:${port}/ping`]).stdout.toString();
    await waitFor("pong for 127.0.0.2", () => from2() === "pong\n");
  });

  test.skipIf(process.getuid?.() !== 0).each([
    ["", [], undefined],
    [", with --mode", ["--mode", "660"], 0o660],
  ] as const)("--status /path under -u nobody: the file is nobody's%s, and removed at exit", async (_name, mode, bits) => {
    using dir = tempDir();
    chmodSync(dir.path, 0o1777); // sticky, as /tmp: only a file's owner may remove it
    const path = join(dir.path, "status.sock");
    await using server = await startServer(["-W", "1", "-u", "nobody", ...mode, "--status", path, "-p", "cat", "-s", "0"]);
    await waitFor("the status socket", () => existsSync(path));
    const stat = statSync(path);
    expect(stat.uid).toBe(65534);
    if (bits !== undefined) expect(stat.mode & 0o7777).toBe(bits);
    expect((await exchange(server.target, "still serving")).data.toString()).toBe("still serving");
    server.proc.kill("SIGTERM");
    await server.exited();
    expect(existsSync(path)).toBe(false);
  });
});
