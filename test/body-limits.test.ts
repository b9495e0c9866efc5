// --max-body: a request may send at most so many bytes of body. With
// CONTENT_LENGTH over it (SCGI, FastCGI) the answer is Status: 413 and the
// CGI never runs; a FastCGI body without CONTENT_LENGTH (Apache's chunked
// one) is cut at the limit with 413, the rest dropped, and a kept
// connection serves its next request. Bad values are refused when the
// command line is read.
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { DEFAULT_MAX_BODY, parseSize } from "../src/cli/parse.ts";
import { exchange, run, startServer, tempDir, waitFor, writeExecutable } from "./harness.ts";
import { begin, converse, endRequests, fcgiRequest, noNginx, pairs, parseRecords, PROTOCOLS, record, scgiRequest, startNginx } from "./gateway-peers.ts";

if (noNginx) console.warn("body-limits.test.ts: nginx is not installed (scripts/install-test-deps.sh installs it); the nginx tests are skipped");

const modes = [
  { name: "-W 2", args: ["-W", "2"] },
  { name: "-l -f", args: ["-l", "-f"] },
];

const TOO_LARGE = "Status: 413 Payload Too Large\r\n";

/** A CGI that leaves a mark when it runs, and says the length of its body. */
function markingCgi(dir: string): { path: string; marker: string } {
  const marker = join(dir, "ran");
  const path = writeExecutable(join(dir, "mark.cgi"), `#!/bin/sh\ntouch ${marker}\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho "read $(wc -c)"\n`);
  return { path, marker };
}

describe.each(modes)("--max-body 1k with $name", ({ args }) => {
  test("SCGI: CONTENT_LENGTH 1025 gets 413 and the CGI does not run; 1024 runs it", async () => {
    using dir = tempDir();
    const cgi = markingCgi(dir.path);
    await using server = await startServer(["--scgi", ...args, "--max-body", "1k", "-p", cgi.path, "-s", "0"]);
    const over = await exchange(server.target, scgiRequest([["CONTENT_LENGTH", "1025"], ["SCGI", "1"]], new Uint8Array(1025)));
    expect(over.data.toString().startsWith(TOO_LARGE)).toBe(true);
    await waitFor("the -v line", () => server.stderr().includes("scgi: 413: a body of 1025 bytes is over --max-body (1024 bytes)"));
    expect(existsSync(cgi.marker)).toBe(false);
    const within = await exchange(server.target, scgiRequest([["CONTENT_LENGTH", "1024"], ["SCGI", "1"]], new Uint8Array(1024)));
    expect(within.data.toString()).toBe("Content-Type: text/plain\r\n\r\nread 1024\n");
    expect(existsSync(cgi.marker)).toBe(true);
  });

  test("FastCGI: CONTENT_LENGTH 1025 gets 413 and END_REQUEST, and the CGI does not run", async () => {
    using dir = tempDir();
    const cgi = markingCgi(dir.path);
    await using server = await startServer(["--fastcgi", ...args, "--max-body", "1k", "-p", cgi.path, "-s", "0"]);
    const reply = await exchange(server.target, fcgiRequest(1, [["CONTENT_LENGTH", "1025"]], new Uint8Array(1025)));
    const parsed = parseRecords(reply.data);
    expect(parsed.stdout.startsWith(TOO_LARGE)).toBe(true);
    expect(endRequests(parsed)).toEqual([{ id: 1, app: 0, protocol: 0 }]);
    await waitFor("the -v line", () => server.stderr().includes("fastcgi: 413: a body of 1025 bytes is over --max-body (1024 bytes)"));
    expect(existsSync(cgi.marker)).toBe(false);
  });

  test("FastCGI without CONTENT_LENGTH: cut at the limit with 413, the rest dropped; the kept connection serves its next request", async () => {
    using dir = tempDir();
    const cgi = markingCgi(dir.path);
    await using server = await startServer(["--fastcgi", ...args, "--max-body", "1k", "-p", cgi.path, "-s", "0"]);
    // 200 KB in STDIN records of 64 KiB: the first passes the limit, the rest must be read and dropped.
    const chunked = fcgiRequest(1, [["REQUEST_METHOD", "POST"]], new Uint8Array(200_000), true);
    const next = fcgiRequest(2, [["REQUEST_METHOD", "POST"]], new Uint8Array(1024));
    const reply = await exchange(server.target, Buffer.concat([chunked, next]));
    const parsed = parseRecords(reply.data);
    expect(endRequests(parsed)).toEqual([
      { id: 1, app: 0, protocol: 0 },
      { id: 2, app: 0, protocol: 0 },
    ]);
    const first = Buffer.concat(parsed.records.filter((r) => r.type === 6 && r.id === 1).map((r) => r.content)).toString();
    const second = Buffer.concat(parsed.records.filter((r) => r.type === 6 && r.id === 2).map((r) => r.content)).toString();
    expect(first.startsWith(TOO_LARGE)).toBe(true);
    expect(second).toBe("Content-Type: text/plain\r\n\r\nread 1024\n");
    await waitFor("the -v line", () => server.stderr().includes("fastcgi: 413: a body past --max-body (1024 bytes)"));
  });
  test("FastCGI: a refused body that keeps coming above the least rate is dropped no longer than --timeout from its refusal", async () => {
    using dir = tempDir();
    const cgi = markingCgi(dir.path);
    await using server = await startServer(["--fastcgi", ...args, "--max-body", "1k", "--timeout", "1", "-p", cgi.path, "-s", "0"]);
    const client = await converse(server.target);
    client.send(Buffer.concat([begin(1), record(4, 1, pairs([["REQUEST_METHOD", "POST"], ["CONTENT_LENGTH", "100000000"]])), record(4, 1)]));
    const started = Date.now();
    let sending = true;
    // 10 KB/s, twenty times the least rate, for as long as the connection lasts: the behaviour under test.
    const drip = (async () => {
      for (; sending; await Bun.sleep(100)) client.send(record(5, 1, new Uint8Array(1000)));
    })();
    try {
      await client.closed();
      expect(Date.now() - started).toBeLessThan(4000);
    } finally {
      sending = false;
      await drip;
      client.close();
    }
    expect(existsSync(cgi.marker)).toBe(false);
  });

  test("FastCGI to a script --cgi-root does not run (404): its body is dropped up to --max-body, and past it the connection ends as a running CGI's", async () => {
    using dir = tempDir();
    const root = join(dir.path, "root");
    mkdirSync(root);
    const post = (size: number) => fcgiRequest(1, [["REQUEST_METHOD", "POST"], ["CONTENT_LENGTH", "10"], ["SCRIPT_FILENAME", join(root, "nothing.cgi")]], new Uint8Array(size));
    await using server = await startServer(["--fastcgi", ...args, "--max-body", "1k", "--cgi-root", root, "-s", "0"]);
    const within = parseRecords((await exchange(server.target, post(10))).data);
    expect(within.stdout.startsWith("Status: 404 Not Found\r\n")).toBe(true);
    expect(endRequests(within)).toEqual([{ id: 1, app: 0, protocol: 0 }]);
    // A client that declares 10 bytes and sends 3 MB: not read to its end (nothing bounded it but the rate) to answer 404.
    const past = parseRecords((await exchange(server.target, post(3_000_000))).data);
    await waitFor("the -v line", () => server.stderr().includes("fastcgi: 413: a body past --max-body (1024 bytes)"));
    expect(past.stdout).toBe("");
  });
});

describe.each(modes)("without --max-body, with $name", ({ args }) => {
  test("the default, 100m as the man page says: a CONTENT_LENGTH one byte over gets 413 and the CGI does not run (SCGI and FastCGI)", async () => {
    expect(parseSize("100m")).toBe(DEFAULT_MAX_BODY);
    using dir = tempDir();
    const cgi = markingCgi(dir.path);
    const over = String(DEFAULT_MAX_BODY + 1);
    await using scgi = await startServer(["--scgi", ...args, "-p", cgi.path, "-s", "0"]);
    await using fcgi = await startServer(["--fastcgi", ...args, "-p", cgi.path, "-s", "0"]);
    // No body is sent: the declared length alone is refused, before a byte of it is read.
    const scgiReply = await exchange(scgi.target, scgiRequest([["CONTENT_LENGTH", over], ["SCGI", "1"]]));
    expect(scgiReply.data.toString().startsWith(TOO_LARGE)).toBe(true);
    const fcgiReply = parseRecords((await exchange(fcgi.target, fcgiRequest(1, [["CONTENT_LENGTH", over]]))).data);
    expect(fcgiReply.stdout.startsWith(TOO_LARGE)).toBe(true);
    expect(endRequests(fcgiReply)).toEqual([{ id: 1, app: 0, protocol: 0 }]);
    expect(existsSync(cgi.marker)).toBe(false);
  });
});

describe.each(modes)("a body that stops coming, with $name", ({ args }) => {
  // 90 KB at once earns 180 s at the least rate: a second without a byte (--timeout 1) ends it first. SCGI's declared
  // body, and FastCGI's without CONTENT_LENGTH (held whole before the CGI runs), its empty STDIN never sent.
  const fastcgi = fcgiRequest(1, [["REQUEST_METHOD", "POST"]], new Uint8Array(90000));
  const bodies = [
    { name: "SCGI", flag: "--scgi", request: () => scgiRequest([["CONTENT_LENGTH", "100000"], ["SCGI", "1"]], new Uint8Array(100000)).subarray(0, 90100) },
    { name: "FastCGI", flag: "--fastcgi", request: () => fastcgi.subarray(0, fastcgi.length - 8) },
  ];
  test.each(bodies)("$name: the connection ends --timeout after the last byte, not at the least rate's 180 s", async ({ flag, request }) => {
    using dir = tempDir();
    const cgi = markingCgi(dir.path);
    await using server = await startServer([flag, ...args, "--timeout", "1", "-p", cgi.path, "-s", "0"]);
    const client = await converse(server.target);
    client.send(request());
    const sent = Date.now();
    await client.closed(10_000);
    expect(Date.now() - sent).toBeLessThan(4000);
    client.close();
  });
});

describe.each(PROTOCOLS)("$name through nginx (client_max_body_size 16m)", ({ flag, protocol }) => {
  test.skipIf(noNginx).each(modes)("--max-body 1m with $name: POSTs of 4 and 8 MB get socket's 413 (not a 502), 1 MB is served", async ({ args }) => {
    using dir = tempDir();
    const cgi = markingCgi(dir.path);
    await using server = await startServer([flag, ...args, "--max-body", "1m", "-p", cgi.path, "-s", "0"]);
    await using nginx = await startNginx(dir.path, protocol, server.target, { maxBody: "16m" });
    const post = async (size: number) => {
      const response = await nginx.fetch("/upload", { method: "POST", body: new Uint8Array(size) });
      return `${response.status} ${await response.text()}`;
    };
    expect([await post(4 << 20), await post(8 << 20)]).toEqual(["413 413 Payload Too Large\n", "413 413 Payload Too Large\n"]);
    expect(existsSync(cgi.marker)).toBe(false);
    expect(await post(1 << 20)).toBe(`200 read ${1 << 20}\n`);
  }, 20000);
});

describe("--max-body on the command line", () => {
  test.each([["0"], ["abc"], ["1t"], ["-5"], ["1.5m"], ["1025g"], [""], ["10 m"]])("'%s' is refused in one line (15)", async (value) => {
    const result = await run(["--fastcgi", "--max-body", value, "-s", "-p", "/bin/cat", "0"]);
    expect(result).toMatchObject({
      status: 15,
      stdout: "",
      stderr: `socket: --max-body wants a size from 1 to 1024g (bytes, or a number with k, m or g), not '${value}'\n`,
    });
  });

  test("it needs --scgi or --fastcgi", async () => {
    const result = await run(["--max-body", "1m", "-s", "-p", "/bin/cat", "0"]);
    expect(result.status).toBe(15);
    expect(result.stderr.split("\n")[0]).toBe("socket: --max-body needs --scgi or --fastcgi");
  });

  test("parseSize reads sizes as nginx's client_max_body_size does", () => {
    expect(parseSize("1")).toBe(1);
    expect(parseSize("1024")).toBe(1024);
    expect(parseSize("8k")).toBe(8192);
    expect(parseSize("8K")).toBe(8192);
    expect(parseSize("100m")).toBe(100 * 1024 * 1024);
    expect(parseSize("2M")).toBe(2 * 1024 * 1024);
    expect(parseSize("1g")).toBe(1024 ** 3);
    expect(parseSize("1024G")).toBe(1024 ** 4);
    for (const bad of ["0", "0k", "", "k", "1t", "1.5m", "-1", " 1", "1kb", "1025g", "99999999999999"]) expect(parseSize(bad)).toBeUndefined();
  });
});
