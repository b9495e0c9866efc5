// How long a gateway request and its connection last: a request ends when
// its CGI exits (not when a background process it left lets go of its
// output), what it started ends with it when the request is cut short, a
// kept FastCGI connection cannot hold a worker from clients waiting, and
// a retiring worker closes its kept connection without losing a request
// nginx already sent on it. dist/socket on real sockets; nginx where the
// case is about a web server.
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { exchange, isAlive, startServer, tempDir, waitFor, workersOf, writeExecutable } from "./harness.ts";
import { begin, converse, endRequests, fcgiRequest, noNginx, pairs, parseRecords, record, scgiRequest, startNginx, unread } from "./gateway-peers.ts";
import { draggedHeader, KEPT_HEADER_MS, KEPT_IDLE_MS, keptVerdict } from "../src/request/fastcgi-engine.ts";

const PATH = { PATH: "/usr/local/bin:/usr/bin:/bin" };

const script = (dir: string, name: string, body: string): string => writeExecutable(join(dir, name), `#!/bin/sh\n${body}\n`);

/** The pid a CGI wrote to `file` (its background process's), once it is there. */
async function pidIn(file: string): Promise<number> {
  await waitFor(`${file} to be written`, () => existsSync(file) && /^\d+\n/.test(readFileSync(file, "utf8")));
  return Number(readFileSync(file, "utf8").trim());
}

/** Ends a background process a test's CGI left running on purpose. */
function killLeftover(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // gone
  }
}

const modes = [
  { name: "-W 1", args: ["-W", "1"] },
  { name: "-l -f", args: ["-l", "-f"] },
];

describe.each(modes)("a CGI that leaves a process in the background, with $name", ({ args }) => {
  test("FastCGI: END_REQUEST comes at the CGI's exit with what it wrote; the background process is left to run", async () => {
    using dir = tempDir();
    const bg = join(dir.path, "bg");
    const cgi = script(dir.path, "bg.cgi", `printf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'\nsleep 30 &\necho $! > ${bg}`);
    await using server = await startServer(["--fastcgi", ...args, "-p", cgi, "-s", "0"], { env: PATH });
    const started = Date.now();
    const reply = await exchange(server.target, fcgiRequest(1, [["REQUEST_METHOD", "GET"]]), { ms: 5000 });
    const tookMs = Date.now() - started;
    const sleeper = await pidIn(bg);
    try {
      const parsed = parseRecords(reply.data);
      expect(parsed.stdout).toContain("hi");
      expect(endRequests(parsed)).toEqual([{ id: 1, app: 0, protocol: 0 }]);
      expect(tookMs).toBeLessThan(3000); // far below the background sleep's 30 s
      expect(isAlive(sleeper)).toBe(true); // a CGI that ended normally keeps what it started
    } finally {
      killLeftover(sleeper);
    }
  }, 20_000);

  test("SCGI: the answer ends at the CGI's exit with what it wrote; the background process is left to run", async () => {
    using dir = tempDir();
    const bg = join(dir.path, "bg");
    const cgi = script(dir.path, "bg.cgi", `printf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'\nsleep 30 &\necho $! > ${bg}`);
    await using server = await startServer(["--scgi", ...args, "-p", cgi, "-s", "0"], { env: PATH });
    const started = Date.now();
    const reply = await exchange(server.target, scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"], ["REQUEST_METHOD", "GET"]]), { ms: 5000 });
    const tookMs = Date.now() - started;
    const sleeper = await pidIn(bg);
    try {
      expect(reply.data.toString()).toEndWith("\r\n\r\nhi\n");
      expect(tookMs).toBeLessThan(3000); // far below the background sleep's 30 s
      expect(isAlive(sleeper)).toBe(true);
    } finally {
      killLeftover(sleeper);
    }
  }, 20_000);

  test("a background process in a session of its own (setsid) holds neither an SCGI nor a FastCGI answer", async () => {
    using dir = tempDir();
    const bg = join(dir.path, "bg");
    const cgi = script(dir.path, "bg.cgi", `printf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'\nsetsid sh -c 'echo $$ > ${bg}; exec sleep 30' &\nwhile [ ! -s ${bg} ]; do :; done`);
    for (const protocol of ["scgi", "fastcgi"] as const) {
      await using server = await startServer([`--${protocol}`, ...args, "-p", cgi, "-s", "0"], { env: PATH });
      const request = protocol === "scgi" ? scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"]]) : fcgiRequest(1, [["REQUEST_METHOD", "GET"]]);
      const started = Date.now();
      const reply = await exchange(server.target, request, { ms: 5000 });
      const tookMs = Date.now() - started;
      const sleeper = await pidIn(bg);
      try {
        expect(protocol === "scgi" ? reply.data.toString() : parseRecords(reply.data).stdout).toEndWith("\r\n\r\nhi\n");
        expect(tookMs).toBeLessThan(3000); // far below the background sleep's 30 s
      } finally {
        killLeftover(sleeper);
        rmSync(bg, { force: true });
      }
    }
  }, 30_000);

  test("FastCGI: ABORT_REQUEST ends the CGI's process group, its background process too", async () => {
    using dir = tempDir();
    const bg = join(dir.path, "bg");
    const cgi = script(dir.path, "waits.cgi", `sleep 30 &\necho $! > ${bg}\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'\nsleep 30`);
    await using server = await startServer(["--fastcgi", ...args, "-p", cgi, "-s", "0"], { env: PATH });
    const client = await converse(server.target);
    client.send(fcgiRequest(1, [["REQUEST_METHOD", "GET"]], new Uint8Array(0), true));
    await client.until("the answer", (data) => parseRecords(data).stdout.includes("hi"));
    const sleeper = await pidIn(bg);
    try {
      client.send(record(2, 1)); // FCGI_ABORT_REQUEST
      await client.until("END_REQUEST after the abort", (data) => endRequests(parseRecords(data)).length === 1);
      await waitFor("the background process to be ended", () => !isAlive(sleeper), 4000);
    } finally {
      killLeftover(sleeper);
      client.close();
    }
  }, 20_000);

  for (const { name, flag, request } of [
    { name: "FastCGI", flag: "--fastcgi", request: fcgiRequest(1, [["REQUEST_METHOD", "GET"]]) },
    { name: "SCGI", flag: "--scgi", request: scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"]]) },
  ]) {
    test(`${name}: --timeout ends the CGI's process group, its background process too`, async () => {
      using dir = tempDir();
      const bg = join(dir.path, "bg");
      const cgi = script(dir.path, "silent.cgi", `sleep 30 &\necho $! > ${bg}\nsleep 30`);
      await using server = await startServer([flag, ...args, "--timeout", "1", "-p", cgi, "-s", "0"], { env: PATH });
      const replying = exchange(server.target, request, { ms: 6000, halfClose: false });
      const sleeper = await pidIn(bg);
      try {
        await replying; // the connection is closed at the timeout
        await waitFor("the background process to be ended", () => !isAlive(sleeper), 4000);
      } finally {
        killLeftover(sleeper);
      }
    }, 20_000);
  }
});

// A web server that closes while its CGI writes (its client went away): nobody hears the rest, so the CGI must not
// run on with socket reading its output without end (under -f that grew socket by hundreds of MB a second).
describe.each(modes)("a CGI that writes without end after its connection closed, with $name", ({ args }) => {
  for (const { name, flag, request } of [
    { name: "FastCGI", flag: "--fastcgi", request: fcgiRequest(1, [["REQUEST_METHOD", "GET"]]) },
    { name: "SCGI", flag: "--scgi", request: scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"]]) },
  ]) {
    test(`${name}: is ended, and socket does not grow`, async () => {
      using dir = tempDir();
      const pidFile = join(dir.path, "pid");
      const cgi = script(dir.path, "endless.cgi", `echo $$ > ${pidFile}\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nexec cat /dev/zero`);
      await using server = await startServer([flag, ...args, "-p", cgi, "-s", "0"], { env: PATH });
      const client = connect(server.target as number, "127.0.0.1");
      try {
        let heard = 0;
        client.on("data", (d: Buffer) => void (heard += d.length));
        client.on("error", () => {});
        client.write(request);
        const writer = await pidIn(pidFile);
        await waitFor("the answer to begin", () => heard > 0);
        client.destroy();
        await waitFor("the CGI to be ended", () => !isAlive(writer), 5000);
        await Bun.sleep(300); // what a reader still left would have taken in by now
        const megabytes = [server.proc.pid, ...workersOf(server.proc.pid)].map(rssMegabytes).reduce((a, b) => a + b, 0);
        expect(megabytes).toBeLessThan(400);
      } finally {
        client.destroy();
      }
    }, 20_000);
  }
});

/** A process's resident memory in MB (0 once it has gone). */
function rssMegabytes(pid: number): number {
  const status = existsSync(`/proc/${pid}/status`) ? readFileSync(`/proc/${pid}/status`, "utf8") : "";
  return Number(status.match(/VmRSS:\s+(\d+)/)?.[1] ?? 0) / 1024;
}

test("FastCGI -W 1: a TERM's drain finishes a request whose CGI left a process in the background, then ends that process", async () => {
  using dir = tempDir();
  const bg = join(dir.path, "bg");
  const cgi = script(dir.path, "bg.cgi", `sleep 30 &\necho $! > ${bg}\nsleep 0.3\nprintf 'Content-Type: text/plain\\r\\n\\r\\ndrained\\n'`);
  await using server = await startServer(["--fastcgi", "-W", "1", "--grace", "10", "-p", cgi, "-s", "0"], { env: PATH });
  const replying = exchange(server.target, fcgiRequest(1, [["REQUEST_METHOD", "GET"]]), { ms: 6000 });
  const sleeper = await pidIn(bg);
  try {
    process.kill(server.proc.pid, "SIGTERM");
    expect(parseRecords((await replying).data).stdout).toContain("drained");
    // Far below the grace: the worker was not held by the background process.
    expect(await Promise.race([server.exited(), Bun.sleep(5000).then(() => "still running")])).not.toBe("still running");
    await waitFor("the background process to be ended", () => !isAlive(sleeper), 3000);
  } finally {
    killLeftover(sleeper);
  }
}, 20_000);

test.skipIf(noNginx)("nginx keeping FastCGI connections: POSTs under HUPs and --max-requests all get 200, none 502", async () => {
  using dir = tempDir();
  const cgi = script(dir.path, "post.cgi", `cat > /dev/null\nprintf 'Content-Type: text/plain\\r\\n\\r\\nstored\\n'`);
  await using server = await startServer(["--fastcgi", "-W", "2", "--max-requests", "5", "-p", cgi, "-s", "0"], { env: PATH });
  await using nginx = await startNginx(dir.path, "fastcgi", server.target, { keepConn: true, keepalive: 8 });
  const statuses: number[] = [];
  const body = "x".repeat(2000);
  const end = Date.now() + 6000;
  const post = async () => {
    while (Date.now() < end) {
      const response = await nginx.fetch("/store", { method: "POST", body, signal: AbortSignal.timeout(8000) });
      await response.text();
      statuses.push(response.status);
    }
  };
  const hups = (async () => {
    for (let i = 0; i < 12 && Date.now() < end; i++) {
      await Bun.sleep(450); // the pace of reloads under load is the behaviour under test
      process.kill(server.proc.pid, "SIGHUP");
    }
  })();
  await Promise.all([...Array.from({ length: 8 }, post), hups]);
  const bad = statuses.filter((s) => s !== 200);
  expect(statuses.length).toBeGreaterThan(100);
  expect({ bad, log: bad.length > 0 ? nginx.errorLog().split("\n").filter((l) => l.includes("[error]")).slice(0, 5) : [] }).toEqual({ bad: [], log: [] });
}, 30_000);

// A header dripped from its first byte, or after a whole BEGIN_REQUEST (the request under way: not an idle connection).
test.each([
  ["from its BEGIN_REQUEST", false],
  ["after a whole BEGIN_REQUEST", true],
])("-W 2: two kept connections dripping their next header %s do not hold the pool from a third client", async (_name, afterBegin) => {
  using dir = tempDir();
  const cgi = script(dir.path, "hi.cgi", `printf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'`);
  await using server = await startServer(["--fastcgi", "-W", "2", "-p", cgi, "-s", "0"], { env: PATH });
  const next = Buffer.concat([begin(2, 1, true), record(4, 2, pairs([["REQUEST_METHOD", "GET"], ["X", "y".repeat(200)]]))]);
  const whole = afterBegin ? begin(2, 1, true).length : 0;
  const drippers = await Promise.all([converse(server.target), converse(server.target)]);
  let dripping = true;
  const drips: Promise<void>[] = [];
  try {
    for (const client of drippers) {
      // One whole request each (each holds a worker, kept), then the next one's header a byte at a time.
      client.send(fcgiRequest(1, [["REQUEST_METHOD", "GET"]], new Uint8Array(0), true));
      await client.until("the first answer", (data) => endRequests(parseRecords(data)).length === 1);
      client.send(next.subarray(0, whole));
      drips.push(
        (async () => {
          for (let at = whole; dripping && at < next.length; at++) {
            client.send(next.subarray(at, at + 1));
            await Bun.sleep(100); // the drip is the behaviour under test
          }
        })(),
      );
    }
    const started = Date.now();
    const reply = await exchange(server.target, fcgiRequest(1, [["REQUEST_METHOD", "GET"]]), { ms: 6000 });
    expect(parseRecords(reply.data).stdout).toContain("hi");
    expect(Date.now() - started).toBeLessThan(KEPT_HEADER_MS + 2000);
    await waitFor("the -v line", () => server.stderr().includes("fastcgi: no complete request in time while another connection waits"));
  } finally {
    dripping = false;
    await Promise.all(drips);
    for (const client of drippers) client.close();
  }
}, 20_000);

test("-W 1: a kept connection that completes each dripped header just in time gets one request, then ends: a waiting client is served", async () => {
  using dir = tempDir();
  const cgi = script(dir.path, "hi.cgi", `printf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'`);
  await using server = await startServer(["--fastcgi", "-W", "1", "-p", cgi, "-s", "0"], { env: PATH });
  const holder = await converse(server.target);
  let holding = true;
  let sent = 0;
  // Each next header's BEGIN_REQUEST at once (never idle), the rest well within KEPT_HEADER_MS: every header makes its deadline.
  const whole = begin(1, 1, true).length;
  const hold = (async () => {
    while (holding) {
      const next = fcgiRequest(++sent, [["REQUEST_METHOD", "GET"]], new Uint8Array(0), true);
      holder.send(next.subarray(0, whole));
      await Bun.sleep(KEPT_HEADER_MS * 0.7); // the drip is the behaviour under test
      holder.send(next.subarray(whole));
      await holder.until(`answer ${sent}`, (data) => endRequests(parseRecords(data)).length >= sent);
    }
  })().catch(() => undefined); // its connection ended: the point
  try {
    await waitFor("the holder's first answer", () => sent >= 2, 5000);
    const started = Date.now();
    const reply = await exchange(server.target, fcgiRequest(1, [["REQUEST_METHOD", "GET"]]), { ms: 6000 });
    expect(parseRecords(reply.data).stdout).toContain("hi");
    expect(Date.now() - started).toBeLessThan(2 * KEPT_HEADER_MS + 1500);
    await holder.closed();
    await waitFor("the -v line", () => server.stderr().includes("fastcgi: a kept connection's hurried header dragged on: the connection ends with this request"));
  } finally {
    holding = false;
    holder.close();
    await hold;
  }
}, 20_000);

test("-W 1: a request on a kept connection quiet long enough to close, seen with a connection waiting, is served, not cut", async () => {
  using dir = tempDir();
  const cgi = script(dir.path, "hi.cgi", `printf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'`);
  await using server = await startServer(["--fastcgi", "-W", "1", "-p", cgi, "-s", "0"], { env: PATH });
  const port = Number(server.target);
  const get = (id: number) => fcgiRequest(id, [["REQUEST_METHOD", "GET"]], new Uint8Array(0), true);
  const kept = await converse(server.target);
  kept.send(get(1));
  await kept.until("the first answer", (data) => endRequests(parseRecords(data)).length === 1);
  const [worker] = workersOf(server.proc.pid);
  await Bun.sleep(KEPT_IDLE_MS + 100); // quiet past the rule's time: the case under test
  // Stopped, the worker sees the next request and the waiting connection in one wake-up, as a busy machine makes it.
  process.kill(worker, "SIGSTOP");
  const stopped = async () => {
    const client = await converse(server.target);
    client.send(fcgiRequest(1, [["REQUEST_METHOD", "GET"]]));
    kept.send(get(2));
    await waitFor("the request in the worker's socket", () => unread(port, kept.localPort) > 0);
    return client;
  };
  const waiting = await stopped().finally(() => process.kill(worker, "SIGCONT"));
  const data = await kept.until("the second answer", (d) => endRequests(parseRecords(d)).length === 2);
  expect(parseRecords(data).stdout.match(/hi/g)?.length).toBe(2);
  const other = await waiting.until("the waiting client's answer", (d) => endRequests(parseRecords(d)).length === 1);
  expect(parseRecords(other).stdout).toContain("hi");
  await kept.closed();
  kept.close();
  waiting.close();
}, 15_000);

describe("the kept connection rule (fastcgi-engine.ts keptVerdict)", () => {
  const state = { now: 10_000, quietSince: 10_000 - KEPT_IDLE_MS, idle: true, leavingSince: undefined, retiring: false, othersWait: () => true, hurrySince: undefined };
  test("an idle kept connection closes for a waiting one only once quiet for KEPT_IDLE_MS", () => {
    expect(keptVerdict(state)).toEqual({ close: "closing an idle kept connection: another connection is waiting" });
    expect(keptVerdict({ ...state, quietSince: state.now - KEPT_IDLE_MS + 1 })).toMatchObject({ hurrySince: state.now });
    expect(keptVerdict({ ...state, othersWait: () => false })).toBeUndefined();
  });
  test("a part of a header is never closed for, only hurried (from the first time it was)", () => {
    expect(keptVerdict({ ...state, idle: false, hurrySince: 9000 })).toMatchObject({ hurrySince: 9000 });
    expect(keptVerdict({ ...state, idle: false, othersWait: () => false, leavingSince: 1 })).toMatchObject({ hurrySince: state.now });
  });
  test("a header whole more than KEPT_IDLE_MS after it was hurried dragged on: its request ends the connection", () => {
    expect(draggedHeader(undefined, 10_000)).toBe(false); // never hurried: nobody waited
    expect(draggedHeader(10_000 - KEPT_IDLE_MS, 10_000)).toBe(false); // whole within KEPT_IDLE_MS of the hurry
    expect(draggedHeader(10_000 - KEPT_IDLE_MS - 1, 10_000)).toBe(true);
  });
  test("a stopping worker's connection closes once quiet, whether anyone waits or not", () => {
    let asked = false;
    const leaving = { ...state, leavingSince: 5000, othersWait: () => (asked = true) };
    expect(keptVerdict(leaving)).toEqual({ close: "closing an idle kept connection: this worker is leaving" });
    expect(asked).toBe(false);
  });
  test("a retired worker's idle connection is neither closed nor hurried, however quiet; a header begun on it is hurried", () => {
    let asked = false;
    const retired = { ...state, leavingSince: 5000, retiring: true, quietSince: 0, othersWait: () => (asked = true) };
    expect(keptVerdict(retired)).toBeUndefined();
    expect(keptVerdict({ ...retired, idle: false })).toMatchObject({ hurrySince: state.now });
    expect(asked).toBe(false);
  });
});
