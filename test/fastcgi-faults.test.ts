// FastCGI against clients that misbehave or go away:
// replies a client never reads, a header dripped a byte at a time or sent
// in one-byte records, a web server that closes in the middle of a request.
// dist/socket on real sockets; nginx where the case is about a web server.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Socket } from "bun";
import { descendantsOf, exchange, serverHasRead, startServer, tempDir, waitFor, workersOf, type Target, writeExecutable } from "./harness.ts";
import { begin, enc, endRequests, fcgiRequest, noNginx, pairs, parseRecords, record, startNginx } from "./gateway-peers.ts";

const PATH = { PATH: "/usr/local/bin:/usr/bin:/bin" };

const script = (dir: string, name: string, body: string): string => writeExecutable(join(dir, name), `#!/bin/sh\n${body}\n`);

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
}

/** Processes the server started whose command line holds `text`. */
const running = (serverPid: number, text: string) => descendantsOf(serverPid).filter((pid) => commandLine(pid).includes(text));

function rssKiB(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+)/m)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** A raw client: sends what it is given (waiting for drain), reads only if told to, knows when it is closed. */
async function rawClient(target: Target, opts: { read: boolean }) {
  let closed = false;
  let closedAt = 0;
  let drained: (() => void) | undefined;
  const chunks: Buffer[] = [];
  const handlers = {
    open: (s: Socket<undefined>) => void (opts.read || s.pause()),
    data: (_s: Socket<undefined>, d: Buffer) => void chunks.push(Buffer.from(d)),
    drain: () => drained?.(),
    close: () => void ((closed = true), (closedAt = Date.now()), drained?.()),
    error: () => void ((closed = true), (closedAt = Date.now()), drained?.()),
  };
  const socket: Socket<undefined> =
    typeof target === "number"
      ? await Bun.connect({ hostname: "127.0.0.1", port: target, socket: handlers })
      : await Bun.connect({ unix: target, socket: handlers });
  return {
    socket,
    data: () => Buffer.concat(chunks),
    closed: () => closed,
    closedAt: () => closedAt,
    /** Writes all of `bytes` unless the connection closes first; resolves false then. */
    async send(bytes: Uint8Array): Promise<boolean> {
      let at = 0;
      while (at < bytes.length) {
        if (closed) return false;
        const n = socket.write(bytes.subarray(at));
        if (n < 0) return false;
        at += n;
        // The drain event, or another try after 100 ms should it never come (the send buffer is polled, not slept on).
        if (at < bytes.length) await Promise.race([new Promise<void>((r) => (drained = r)), Bun.sleep(100)]);
      }
      return true;
    },
  };
}

const modes = [
  { name: "-W 1", args: ["-W", "1"] },
  { name: "-l -f", args: ["-l", "-f"] },
];

describe.each(modes)("FastCGI with $name", ({ args }) => {
  const start = (program: string, extra: string[] = []) =>
    startServer(["--fastcgi", ...args, ...extra, "-p", program, "-s", "0"], { env: PATH });
  /** The process that holds the connections: the worker, or the server itself under -f. */
  const holder = (serverPid: number) => (args[0] === "-W" ? workersOf(serverPid) : [serverPid]);

  test("a client that never reads its replies to unknown records does not grow the server without bound", async () => {
    using dir = tempDir();
    await using server = await start(script(dir.path, "hi.cgi", `printf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'`));
    const port = server.target as number;
    // A worker exists once a connection has been served; -f is the server itself.
    expect(parseRecords((await exchange(port, fcgiRequest(1, [["A", "b"]]))).data).stdout).toContain("hi");
    const pids = holder(server.proc.pid);
    const before = Math.max(...pids.map(rssKiB));
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, ...pids.map(rssKiB))), 20);
    try {
      const client = await rawClient(port, { read: false });
      // 8 MB of 8-byte records of an unknown type: each asks for a 16-byte UNKNOWN_TYPE reply.
      const unknown = Buffer.concat(Array.from({ length: 8192 }, () => record(99, 0)));
      const sending = (async () => {
        for (let i = 0; i < 128 && (await client.send(unknown)); i++);
      })();
      await Promise.race([sending, Bun.sleep(15_000)]);
      await waitFor("the connection to be dropped", () => client.closed(), 5000);
      peak = Math.max(peak, ...pids.map(rssKiB));
      client.socket.terminate();
    } finally {
      clearInterval(sampler);
    }
    expect(peak - before).toBeLessThan(100 * 1024);
    await waitFor("the -v line", () => server.stderr().includes("fastcgi: the web server does not read"));
    expect(server.stderr()).not.toMatch(/\n\s+at |internal error/);
    expect(parseRecords((await exchange(port, fcgiRequest(2, [["A", "b"]]))).data).stdout).toContain("hi");
  }, 40_000);

  test("a header dripped a byte every 0.5 s is cut at an absolute deadline (--timeout 2), not kept open", async () => {
    using dir = tempDir();
    await using server = await start(script(dir.path, "hi.cgi", `printf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'`), ["--timeout", "2"]);
    const client = await rawClient(server.target as number, { read: true });
    const accepted = Date.now();
    const header = Buffer.concat([begin(1), record(4, 1, pairs([["REQUEST_METHOD", "GET"], ["X", "y".repeat(40)]])), record(4, 1)]);
    for (let at = 0; at < header.length && !client.closed() && Date.now() - accepted < 6000; at++) {
      await client.send(header.subarray(at, at + 1));
      await Bun.sleep(500); // the drip is the behaviour under test
    }
    expect(client.closed()).toBe(true);
    expect(client.closedAt() - accepted).toBeLessThan(3200);
    await waitFor("the -v line", () => server.stderr().includes("fastcgi: no complete request in time"));
    expect(parseRecords((await exchange(server.target, fcgiRequest(2, [["A", "b"]]))).data).stdout).toContain("hi");
  }, 20_000);

  test("a kept connection's deadline starts at the end of the previous request; a running program has only the idle --timeout", async () => {
    using dir = tempDir();
    // Runs 2.5 s (past the 2 s header deadline), saying something every 0.5 s (within the idle --timeout).
    // The second request (QUERY_STRING quick) answers at once: it only has to be served in time.
    const slow = script(dir.path, "slow.cgi", `printf 'Content-Type: text/plain\\r\\n\\r\\n'\n[ "$QUERY_STRING" = quick ] && exec echo tock\nfor i in 1 2 3 4 5; do sleep 0.5; echo tick; done`);
    await using server = await start(slow, ["--timeout", "2"]);
    const client = await rawClient(server.target as number, { read: true });
    await client.send(fcgiRequest(1, [["A", "b"]], new Uint8Array(0), true));
    await waitFor("the first answer", () => parseRecords(client.data()).records.some((r) => r.type === 3), 8000);
    expect(parseRecords(client.data()).stdout.match(/tick/g)?.length).toBe(5);
    // 1.5 s after the first request's end (3 s after accept) the second request is still in time.
    await Bun.sleep(1500); // a wait that proves the deadline does NOT fire: the behaviour under test
    expect(client.closed()).toBe(false);
    await client.send(fcgiRequest(2, [["QUERY_STRING", "quick"]], new Uint8Array(0), true));
    await waitFor("the second answer", () => parseRecords(client.data()).records.filter((r) => r.type === 3).length === 2, 8000);
    expect(parseRecords(client.data()).stdout).toContain("tock");
    client.socket.end();
  }, 20_000);

  test("a client that closes in the middle of the body: the CGI gets EOF and is ended, the server serves the next", async () => {
    using dir = tempDir();
    const cgi = script(dir.path, "drain.cgi", `cat > /dev/null\n[ "$QUERY_STRING" = quick ] || sleep 30\nprintf 'Content-Type: text/plain\\r\\n\\r\\ndone\\n'`);
    await using server = await start(cgi);
    const client = await rawClient(server.target as number, { read: true });
    await client.send(Buffer.concat([begin(1), record(4, 1, pairs([["CONTENT_LENGTH", "100000"]])), record(4, 1), record(5, 1, new Uint8Array(5000))]));
    await waitFor("the CGI to run", () => running(server.proc.pid, "drain.cgi").length === 1);
    client.socket.end();
    await waitFor("the CGI to be gone", () => running(server.proc.pid, "drain.cgi").length === 0, 4000);
    await waitFor("the connection to be closed", () => client.closed(), 4000);
    // One -W worker only: it is free again.
    const next = await exchange(server.target, fcgiRequest(2, [["QUERY_STRING", "quick"]], enc.encode("x")), { ms: 4000 });
    expect(parseRecords(next.data).stdout).toContain("done");
  }, 20_000);

  test("a client that closes while a CGI ignores its input and TERM: TERM, then KILL, the server serves the next", async () => {
    using dir = tempDir();
    const cgi = script(dir.path, "stubborn.cgi", `printf 'Content-Type: text/plain\\r\\n\\r\\n'\n[ "$QUERY_STRING" = quick ] && exec echo quick\ntrap '' TERM\nexec sleep 30.5`);
    await using server = await start(cgi);
    const client = await rawClient(server.target as number, { read: true });
    await client.send(Buffer.concat([begin(1), record(4, 1, pairs([["CONTENT_LENGTH", "10"]])), record(4, 1), record(5, 1, enc.encode("abc"))]));
    await waitFor("the CGI to run", () => running(server.proc.pid, "sleep 30.5").length === 1);
    client.socket.end();
    const closedAt = Date.now();
    await waitFor("the CGI to be gone", () => running(server.proc.pid, "sleep 30.5").length === 0, 4000);
    // It ignored TERM: KILL came after the grace.
    expect(Date.now() - closedAt).toBeGreaterThan(800);
    const next = await exchange(server.target, fcgiRequest(2, [["QUERY_STRING", "quick"]]), { ms: 4000 });
    expect(parseRecords(next.data).stdout).toContain("quick");
  }, 20_000);

  test("a CGI that answered, closed its output and runs on: ABORT_REQUEST ends it, and the worker serves on", async () => {
    using dir = tempDir();
    const cgi = script(dir.path, "lingers.cgi", `printf 'Content-Type: text/plain\\r\\n\\r\\nanswered\\n'\n[ "$QUERY_STRING" = quick ] && exit 0\nexec >&- 2>&-\nexec sleep 30.25`);
    await using server = await start(cgi);
    // Not the web server's end: after the whole request it may be a half-close whose reader still
    // wants END_REQUEST (the half-close test below), so the program runs to its end then.
    for (const round of [1, 2]) {
      const client = await rawClient(server.target as number, { read: true });
      await client.send(fcgiRequest(1, [["REQUEST_METHOD", "GET"]]));
      await waitFor("the answer", () => parseRecords(client.data()).stdout.includes("answered"));
      await waitFor("the CGI to run on", () => running(server.proc.pid, "sleep 30.25").length === 1);
      await client.send(record(2, 1)); // FCGI_ABORT_REQUEST
      await waitFor(`the CGI to be ended (round ${round})`, () => running(server.proc.pid, "sleep 30.25").length === 0, 4000);
      await waitFor("END_REQUEST after the abort", () => client.data().length > 0 && endRequests(parseRecords(client.data())).length === 1, 4000);
      client.socket.end();
    }
    const next = await exchange(server.target, fcgiRequest(2, [["QUERY_STRING", "quick"]]), { ms: 4000 });
    expect(parseRecords(next.data).stdout).toContain("answered");
  }, 20_000);

  test("a client that half-closes after a complete request still gets its answer", async () => {
    using dir = tempDir();
    const cgi = script(dir.path, "late.cgi", `cat > /dev/null\nsleep 0.5\nprintf 'Content-Type: text/plain\\r\\n\\r\\nlate answer\\n'`);
    await using server = await start(cgi);
    const reply = await exchange(server.target, fcgiRequest(1, [["A", "b"]], enc.encode("body")), { ms: 5000 });
    expect(parseRecords(reply.data).stdout).toContain("late answer");
  });
});

test.skipIf(noNginx)("through nginx, -W 4: four uploads aborted mid-body leave no worker stuck; the next four get 200 at once", async () => {
  using dir = tempDir();
  const cgi = script(dir.path, "upload.cgi", `cat > /dev/null\nprintf 'Content-Type: text/plain\\r\\n\\r\\nstored\\n'`);
  await using server = await startServer(["--fastcgi", "-W", "4", "-p", cgi, "-s", "0"], { env: PATH });
  await using nginx = await startNginx(dir.path, "fastcgi", server.target, { requestBuffering: false });
  const uploads = await Promise.all(Array.from({ length: 4 }, () => rawClient(nginx.socket, { read: true })));
  for (const upload of uploads) {
    await upload.send(enc.encode("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"));
    await upload.send(new Uint8Array(20000));
  }
  await waitFor("four CGIs reading the uploads", () => running(server.proc.pid, "upload.cgi").length === 4, 5000);
  for (const upload of uploads) upload.socket.end();
  await waitFor("the aborted uploads' CGIs to be gone", () => running(server.proc.pid, "upload.cgi").length === 0, 4000);
  const statuses = await Promise.all(
    Array.from({ length: 4 }, () => nginx.fetch(`/after`, { method: "POST", body: "small", signal: AbortSignal.timeout(5000) }).then((r) => r.status)),
  );
  expect(statuses).toEqual([200, 200, 200, 200]);
}, 30_000);

test("records split at every kind of boundary (header, content, padding) are read exactly", async () => {
  using dir = tempDir();
  await using server = await startServer(["--fastcgi", "-W", "1", "-p", script(dir.path, "echo.cgi", `printf 'Content-Type: text/plain\\r\\n\\r\\n'\ncat`), "-s", "0"], { env: PATH });
  const padded = (type: number, content: Uint8Array, padding: number) => {
    const bytes = Buffer.concat([record(type, 1, content), Buffer.alloc(padding, 0xee)]);
    bytes[6] = padding;
    return bytes;
  };
  const body = Buffer.from(Array.from({ length: 3000 }, (_, i) => String.fromCharCode(97 + (i % 26))).join(""));
  const request = Buffer.concat([begin(1), padded(4, pairs([["A", "b"]]), 5), record(4, 1), padded(5, body.subarray(0, 2000), 7), padded(5, body.subarray(2000), 255), record(5, 1)]);
  const client = await rawClient(server.target as number, { read: true });
  // Pieces of 1 to 13 bytes, then the rest: cuts land in headers, contents and paddings.
  let at = 0;
  // Each piece is read by the server before the next is sent: it meets every cut.
  for (let size = 1; at < 400; size = (size % 13) + 1) {
    await client.send(request.subarray(at, at + size));
    at += size;
    await serverHasRead(client.socket, server.target as number);
  }
  await client.send(request.subarray(at));
  await waitFor("the answer", () => parseRecords(client.data()).records.some((r) => r.type === 3));
  expect(parseRecords(client.data()).stdout.split("\r\n\r\n")[1]).toBe(body.toString());
  client.socket.end();
}, 60_000); // ~60 pieces, each waiting for the server's (delayed) ACK: about 10 s

test("-l -f: 100 connections each holding 64 KiB of PARAMS in one-byte records hold socket to a few MB, not hundreds", async () => {
  using dir = tempDir();
  await using server = await startServer(["--fastcgi", "-l", "-f", "-p", script(dir.path, "hi.cgi", "true"), "-s", "0"], { env: PATH });
  const port = server.target as number;
  const before = rssKiB(server.proc.pid);
  // 64,000 records of one byte: the limit's bytes (64 KiB), in as many pieces as it can come in; no empty PARAMS.
  const one = record(4, 1, enc.encode("A"));
  const header = Buffer.concat([begin(1), ...Array.from({ length: 64_000 }, () => one)]);
  const clients = await Promise.all(Array.from({ length: 100 }, () => rawClient(port, { read: false })));
  try {
    await Promise.all(clients.map((c) => c.send(header)));
    for (const c of clients) await serverHasRead({ localPort: c.socket.localPort }, port);
    // What is still held a second on (the records themselves are garbage by then).
    await Bun.sleep(1000);
    expect(clients.filter((c) => c.closed())).toEqual([]);
    expect(rssKiB(server.proc.pid) - before).toBeLessThan(150 * 1024);
  } finally {
    for (const c of clients) c.socket.terminate();
  }
}, 30_000);
