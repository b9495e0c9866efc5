// A request body that socket must hold is held on disk, in an unlinked file
// in $TMPDIR, never in a worker's memory: a FastCGI body without
// CONTENT_LENGTH (read whole before the CGI runs), an SCGI body (the same),
// and a FastCGI body the CGI does not read while it writes an answer that
// is held until the body's end. The worker's peak RSS (VmHWM) stays far
// below the body's size, and the CGI gets every byte.
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { BodyQueue } from "../src/gateway/body-spool.ts";
import { exchange, serverHasRead, startServer, tempDir, waitFor, workersOf, writeExecutable } from "./harness.ts";
import { converse, fcgiRequest, parseRecords, scgiRequest } from "./gateway-peers.ts";

const MIB = 1024 * 1024;
const BODY_BYTES = 64 * MIB;
/** A worker serving a 64 MiB body stays under this peak RSS: its own few dozen MB, not the body. */
const RSS_BOUND = 100 * MIB;

const SHA = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function randomBody(size: number): Uint8Array {
  const body = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) body.set(crypto.getRandomValues(new Uint8Array(Math.min(65536, size - i))), i);
  return body;
}

/** Says what its stdin is (the file it was given), its CONTENT_LENGTH and its body's hash. */
const STDIN_CGI = `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho "stdin $(readlink /proc/self/fd/0)"\necho "length $CONTENT_LENGTH"\nhead -c "$CONTENT_LENGTH" | sha256sum\n`;
/** 3 MB of answer before it reads a byte of its body, then the body's hash. */
const ANSWER_FIRST_CGI = `#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\nhead -c 3000000 /dev/zero\nhead -c "$CONTENT_LENGTH" | sha256sum\n`;

/** The peak resident size of a process, in bytes (VmHWM). */
function peakRss(pid: number): number {
  const kib = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmHWM:\s+(\d+) kB/m)?.[1];
  return Number(kib) * 1024;
}

describe("a 64 MiB body", () => {
  test.each([
    ["FastCGI without CONTENT_LENGTH", "--fastcgi"],
    ["SCGI", "--scgi"],
  ])("%s to a -W 1 worker: held in an unlinked file in $TMPDIR, the CGI's stdin, with its CONTENT_LENGTH; bounded RSS", async (_name, flag) => {
    using dir = tempDir();
    using spool = tempDir();
    const cgi = writeExecutable(join(dir.path, "stdin.cgi"), STDIN_CGI);
    await using server = await startServer([flag, "-W", "1", "-p", cgi, "-s", "0"], { env: { TMPDIR: spool.path } });
    await waitFor("the worker", () => workersOf(server.proc.pid).length === 1);
    const [worker] = workersOf(server.proc.pid);
    const body = randomBody(BODY_BYTES);
    const request =
      flag === "--scgi"
        ? scgiRequest([["CONTENT_LENGTH", String(body.length)], ["SCGI", "1"]], body)
        : fcgiRequest(1, [["REQUEST_METHOD", "POST"]], body);
    const reply = await exchange(server.target, request, { ms: 15000 });
    const text = flag === "--scgi" ? reply.data.toString() : parseRecords(reply.data).stdout;
    // O_TMPFILE: a file with no name in the directory, shown as "#inode (deleted)".
    expect(text).toMatch(new RegExp(`^Content-Type: text/plain\r\n\r\nstdin ${spool.path}/#\\d+ \\(deleted\\)\nlength ${BODY_BYTES}\n${SHA(body)}  -\n$`));
    expect(peakRss(worker)).toBeLessThan(RSS_BOUND);
    expect(readdirSync(spool.path)).toEqual([]);
  }, 30000);

  test.each([
    ["-W 1", ["-W", "1"], false],
    ["-W 1, the request half-closed after its body", ["-W", "1"], true],
    ["-l -f", ["-l", "-f"], false],
  ])("FastCGI with %s: a CGI that writes 3 MB before it reads its body: the body waits on disk, not in socket's memory; all arrives", async (_name, mode, halfClose) => {
    using dir = tempDir();
    using spool = tempDir();
    const cgi = writeExecutable(join(dir.path, "first.cgi"), ANSWER_FIRST_CGI);
    await using server = await startServer(["-v", "--fastcgi", ...mode, "-p", cgi, "-s", "0"], { env: { TMPDIR: spool.path } });
    if (mode[0] === "-W") await waitFor("the worker", () => workersOf(server.proc.pid).length === 1);
    const [serving] = mode[0] === "-W" ? workersOf(server.proc.pid) : [server.proc.pid];
    const body = randomBody(BODY_BYTES);
    const reply = await exchange(server.target, fcgiRequest(1, [["CONTENT_LENGTH", String(body.length)]], body), { ms: 15000, halfClose });
    const answer = Buffer.concat(parseRecords(reply.data).records.filter((r) => r.type === 6).map((r) => r.content));
    const header = "Content-Type: application/octet-stream\r\n\r\n";
    if (answer.length !== header.length + 3000000 + 68) console.log("SHORT", answer.length, JSON.stringify(server.stderr()), JSON.stringify(parseRecords(reply.data).records.filter((r) => r.type !== 6).map((r) => [r.type, r.content.length])));
    expect(answer.length).toBe(header.length + 3000000 + 68);
    expect(answer.subarray(header.length + 3000000).toString()).toBe(`${SHA(body)}  -\n`);
    expect(peakRss(serving)).toBeLessThan(RSS_BOUND);
  }, 30000);
});

test.each([
  ["SCGI", "--scgi"],
  ["FastCGI", "--fastcgi"],
])("%s: a $TMPDIR where no file can be made: the request with a body fails with a line saying why; one without a body is served", async (_name, flag) => {
  using dir = tempDir();
  const cgi = writeExecutable(join(dir.path, "stdin.cgi"), STDIN_CGI);
  const missing = join(dir.path, "no-such-dir");
  await using server = await startServer([flag, "-W", "1", "-p", cgi, "-s", "0"], { env: { TMPDIR: missing } });
  const body = new Uint8Array(1000);
  const request = (withBody: boolean) =>
    flag === "--scgi"
      ? scgiRequest([["CONTENT_LENGTH", String(withBody ? body.length : 0)], ["SCGI", "1"]], withBody ? body : undefined)
      : fcgiRequest(1, [["REQUEST_METHOD", "POST"]], withBody ? body : undefined);
  const failed = await exchange(server.target, request(true));
  expect(failed.data.toString()).not.toContain("length");
  await waitFor("the line", () => server.stderr().includes(`socket: cannot hold a request body in ${missing} (TMPDIR): unable to create a file in ${missing}: No such file or directory`));
  const served = await exchange(server.target, request(false));
  const text = flag === "--scgi" ? served.data.toString() : parseRecords(served.data).stdout;
  expect(text).toContain("Content-Type: text/plain\r\n\r\n");
});

describe("BodyQueue", () => {
  test("past 256 KiB in memory the bytes go to an unlinked file in $TMPDIR and come back in order", () => {
    using spool = tempDir();
    const before = process.env.TMPDIR;
    process.env.TMPDIR = spool.path;
    const queue = new BodyQueue();
    try {
      const input = randomBody(3 * MIB + 12345);
      const out: Uint8Array[] = [];
      const drain = (most: number) => {
        for (let head = queue.head(); head && most > 0; head = queue.head()) {
          const n = Math.min(head.length, most, 40000); // a pipe takes what it takes
          out.push(head.slice(0, n));
          queue.take(n);
          most -= n;
        }
      };
      for (let at = 0; at < input.length; at += 65535) {
        queue.push(input.subarray(at, at + 65535));
        if (at % (5 * 65535) === 0) drain(100000);
      }
      const spooled = readdirSync("/proc/self/fd").map((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`);
        } catch {
          return "";
        }
      });
      expect(spooled.filter((target) => target.startsWith(`${spool.path}/#`) && target.endsWith(" (deleted)"))).toHaveLength(1);
      expect(queue.size).toBe(input.length - out.reduce((n, b) => n + b.length, 0));
      drain(Infinity);
      expect(queue.size).toBe(0);
      expect(Buffer.concat(out).equals(Buffer.from(input))).toBe(true);
    } finally {
      queue.clear();
      if (before === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = before;
    }
  });
});

// Under -l -f every connection could hold --max-body on disk at once; all of them together hold at most 8 × --max-body.
describe("-l -f: bodies on disk, all connections together", () => {
  const vars: [string, string][] = [["REQUEST_METHOD", "POST"], ["SCRIPT_NAME", "/len"]];
  const protocols = [
    // SCGI's whole body is held before its CGI runs, its room taken as its bytes come: refused at the byte that passes the limit.
    { name: "SCGI", flag: "--scgi", request: (n: number) => scgiRequest([["CONTENT_LENGTH", "1024"], ["SCGI", "1"], ...vars], new Uint8Array(1024).fill(n)), tail: 10 },
    // FastCGI's body without CONTENT_LENGTH is held whole (its size then given to the CGI): held back, the empty STDIN.
    { name: "FastCGI", flag: "--fastcgi", request: (n: number) => fcgiRequest(1, vars, new Uint8Array(1024).fill(n)), tail: 8 },
  ];
  test.each(protocols)("$name: past 8 × --max-body a body is answered 503 and said; a body's CGI, once over, makes room", async ({ flag, request, tail }) => {
    using dir = tempDir();
    const cgi = writeExecutable(join(dir.path, "len.cgi"), STDIN_CGI);
    await using server = await startServer([flag, "-l", "-f", "--max-body", "1k", "-p", cgi, "-s", "0"]);
    const port = Number(server.target);
    const held = [];
    for (let i = 0; i < 8; i++) {
      const bytes = request(i);
      const client = await converse(port);
      held.push({ client, rest: bytes.subarray(bytes.length - tail) });
      client.send(bytes.subarray(0, bytes.length - tail));
      await serverHasRead(client, port);
    }
    const refused = await converse(port);
    refused.send(request(8));
    await refused.until("the answer", (data) => data.toString().includes("503 Service Unavailable\n"));
    expect(server.stderr()).toContain("503: request bodies on disk would pass 8192 bytes (8 × --max-body): one refused");
    const [first] = held;
    first.client.send(first.rest);
    await first.client.until("its answer", (data) => data.toString().includes("length 1024"));
    await first.client.closed(10000); // the answer's end follows its CGI's exit, which gives the room back
    expect((await exchange(port, request(9))).data.toString()).toContain("length 1024");
    for (const { client } of [...held, { client: refused }]) client.close();
  }, 20_000);

  test("SCGI: bodies that declare --max-body and then drip hold only the bytes that came: another body is served", async () => {
    using dir = tempDir();
    const cgi = writeExecutable(join(dir.path, "len.cgi"), STDIN_CGI);
    await using server = await startServer(["--scgi", "-l", "-f", "--max-body", "1k", "-p", cgi, "-s", "0"]);
    const port = Number(server.target);
    const dripping = [];
    try {
      for (let i = 0; i < 8; i++) {
        const client = await converse(port);
        dripping.push(client);
        client.send(scgiRequest([["CONTENT_LENGTH", "1024"], ["SCGI", "1"], ...vars], new Uint8Array(1).fill(i)));
        await serverHasRead(client, port);
      }
      const reply = await exchange(port, scgiRequest([["CONTENT_LENGTH", "1024"], ["SCGI", "1"], ...vars], new Uint8Array(1024).fill(9)));
      expect(reply.data.toString()).toContain("length 1024");
      expect(server.stderr()).not.toContain("503");
    } finally {
      for (const client of dripping) client.close();
    }
  }, 20_000);

  test.each(protocols)("$name: a body handed to its CGI counts until the CGI exits (its stdin, on disk till then), then makes room", async ({ flag, request }) => {
    using dir = tempDir();
    const pids = join(dir.path, "pids");
    mkdirSync(pids);
    // With ?hold: reads its body, says its pid, and runs on (its stdin, the body's file, open) until killed.
    const hold = `if [ "$QUERY_STRING" = hold ]; then head -c "$CONTENT_LENGTH" > /dev/null; echo $$ > ${pids}/$$; exec sleep 60; fi\n`;
    const cgi = writeExecutable(join(dir.path, "len.cgi"), STDIN_CGI.replace("\n", () => `\n${hold}`));
    await using server = await startServer([flag, "-l", "-f", "--max-body", "1k", "-p", cgi, "-s", "0"]);
    const port = Number(server.target);
    const body = (n: number) => new Uint8Array(1024).fill(n);
    const holding = (n: number) =>
      flag === "--scgi" ? scgiRequest([["CONTENT_LENGTH", "1024"], ["SCGI", "1"], ...vars, ["QUERY_STRING", "hold"]], body(n)) : fcgiRequest(1, [...vars, ["QUERY_STRING", "hold"]], body(n));
    const clients = [];
    const running = () => readdirSync(pids).map(Number);
    try {
      for (let i = 0; i < 8; i++) {
        const client = await converse(port);
        clients.push(client);
        client.send(holding(i));
        await waitFor(`CGI ${i + 1} to run`, () => running().length === i + 1);
      }
      // Eight programs each with a 1 KiB body as stdin: 8 × --max-body on disk, so a ninth body is refused.
      const refused = await converse(port);
      clients.push(refused);
      refused.send(request(8));
      await refused.until("the answer", (data) => data.toString().includes("503 Service Unavailable\n"));
      expect(running().length).toBe(8);
      for (const pid of running()) process.kill(pid, "SIGKILL");
      // Their exits give the room back.
      await waitFor("a body served again", async () => (await exchange(port, request(9))).data.toString().includes("length 1024"));
    } finally {
      for (const pid of running()) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // gone already
        }
      }
      for (const client of clients) client.close();
    }
  }, 20_000);
});
