// Clients that would hold a worker by being slow on purpose: a request body
// dripped a byte at a time (SCGI, FastCGI with and without CONTENT_LENGTH)
// must come at a least rate once its first --timeout (or 30 s) has passed.
// dist/socket on real sockets, one worker, so a held worker shows as a
// second client not served. A web server that reads its answer slowly but
// steadily is the opposite: it gets the whole answer, also the part the
// kernel still holds for it once the request is over, and a CGI whose stderr
// comes while its stdout waits for the full connection.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { exchange, startServer, tempDir, waitFor, writeExecutable, type Target } from "./harness.ts";
import { begin, converse, END_REQUEST_1_HEX, endRequests, fcgiRequest, pairs, parseRecords, peerOutput, pythonPeer, readToSuffix, record, scgiRequest } from "./gateway-peers.ts";
import { REQUEST_BUDGET } from "../src/request/stderr-lines.ts";

const CGI = `#!/bin/sh\nhead -c "\${CONTENT_LENGTH:-0}" > /dev/null\nprintf 'Content-Type: text/plain\\r\\n\\r\\nserved\\n'\n`;
const BODY = 60;

/** A request's start: everything but the body, which then comes a byte at a time. */
const starts = {
  scgi: () => scgiRequest([["CONTENT_LENGTH", String(BODY)], ["SCGI", "1"], ["REQUEST_METHOD", "POST"]]),
  "fastcgi, CONTENT_LENGTH": () => Buffer.concat([begin(1), record(4, 1, pairs([["REQUEST_METHOD", "POST"], ["CONTENT_LENGTH", String(BODY)]])), record(4, 1)]),
  "fastcgi, chunked": () => Buffer.concat([begin(1), record(4, 1, pairs([["REQUEST_METHOD", "POST"]])), record(4, 1)]),
};
const byte = (protocol: keyof typeof starts) => (protocol === "scgi" ? Buffer.from("x") : record(5, 1, Buffer.from("x")));

/** A second, quick client: served once the dripping one's worker is free. */
async function served(target: Target, protocol: keyof typeof starts): Promise<boolean> {
  const request = protocol === "scgi" ? scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"]]) : fcgiRequest(1, [["REQUEST_METHOD", "GET"]]);
  const reply = await exchange(target, request, { ms: 6000 });
  return reply.data.toString("latin1").includes("served");
}

describe("a body dripped a byte every 0.4 s, --timeout 1", () => {
  for (const protocol of Object.keys(starts) as (keyof typeof starts)[]) {
    for (const mode of [["-W", "1"], ["-l", "-f"]]) {
      test(`${protocol}, ${mode.join(" ")}: the connection is cut within seconds, not after the whole body; a second client is served`, async () => {
        using dir = tempDir();
        const cgi = writeExecutable(join(dir.path, "post.cgi"), CGI);
        const flag = protocol === "scgi" ? "--scgi" : "--fastcgi";
        await using server = await startServer([flag, ...mode, "--timeout", "1", "-p", cgi, "-s", "0"], { env: { PATH: "/usr/bin:/bin" } });
        const client = await converse(server.target);
        client.send(starts[protocol]());
        let dripping = true;
        const started = Date.now();
        const drip = (async () => {
          // 60 bytes at 0.4 s: 24 s if nothing cut it; each byte alone comes well within --timeout.
          for (let i = 0; dripping && i < BODY; i++) {
            await Bun.sleep(400); // the drip's pace is what is under test
            client.send(byte(protocol));
          }
        })();
        try {
          await client.closed();
          expect(Date.now() - started).toBeLessThan(6000);
          expect(await served(server.target, protocol)).toBe(true);
        } finally {
          dripping = false;
          client.close();
          await drip;
        }
      }, 20_000);
    }
  }
});

/** A FastCGI web server that reads 4 KiB every 50 ms (80 KiB/s), its receive buffer small (the rest waits in the kernel's send buffer): the answer's records, once END_REQUEST came or the connection ended. */
const slowFastCgiReader = (target: Target, request: Uint8Array): Promise<Buffer> =>
  peerOutput(pythonPeer(target, request, readToSuffix(4096, 0.05), { args: [END_REQUEST_1_HEX], smallBuffer: true }), 20_000);

describe("a web server reading a 400 KB answer at 80 KiB/s on a kept connection, --timeout 1", () => {
  for (const mode of [["-W", "1"], ["-l", "-f"]]) {
    test(`fastcgi, ${mode.join(" ")}: the whole answer, though the kernel still holds its tail for the reader past the next header's limit`, async () => {
      using dir = tempDir();
      const cgi = writeExecutable(join(dir.path, "big.cgi"), "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nexec head -c 400000 /dev/zero\n");
      await using server = await startServer(["--fastcgi", ...mode, "--timeout", "1", "-p", cgi, "-s", "0"], { env: { PATH: "/usr/bin:/bin" } });
      const request = Buffer.concat([begin(1, 1, true), record(4, 1, pairs([["REQUEST_METHOD", "GET"], ["CONTENT_LENGTH", "0"]])), record(4, 1), record(5, 1)]);
      const parsed = parseRecords(await slowFastCgiReader(server.target, request));
      expect(parsed.stdout.length).toBeGreaterThan(400000); // the body, and the CGI's header
      expect(endRequests(parsed)).toEqual([{ id: 1, app: 0, protocol: 0 }]);
      // The idle kept connection then ends at the header's limit, with a FIN: the line says so.
      await waitFor("the idle connection's end", () => server.stderr().includes("no complete request in time"));
    }, 30_000);
  }
});

/**
 * Fills the connection (stdout, non-blocking, until its pipe stays full: the
 * web server reads nothing yet), then writes stderr (less than its pipe
 * holds: a pool worker reads neither while the connection is full), which
 * finds the connection full too, says so in `ready`, and writes the rest:
 * stdout, and stderr past its budget.
 */
const fillThenStderr = (ready: string, count: string) => `#!/usr/bin/python3
import fcntl, os, time
os.write(1, b"Content-Type: text/plain\\r\\n\\r\\n")
fcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) | os.O_NONBLOCK)
sent, full_since = 0, None
while full_since is None or time.monotonic() - full_since < 0.3:
    try:
        sent += os.write(1, b"o" * 65536)
        full_since = None
    except BlockingIOError:
        full_since = full_since or time.monotonic()
        time.sleep(0.01)
os.write(2, b"e" * 60000)
open("${ready}", "w").close()
fcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) & ~os.O_NONBLOCK)
os.write(1, b"o" * 65536)
os.write(2, b"e" * 10000)
open("${count}", "w").write(str(sent + 65536))
`;

/** A FastCGI web server that reads nothing until `ready` exists, then everything until END_REQUEST (or the end). */
const readerAfter = (target: Target, request: Uint8Array, ready: string): Promise<Buffer> =>
  peerOutput(pythonPeer(target, request, ["while not os.path.exists(args[1]): time.sleep(0.01)", ...readToSuffix(65536)], { args: [END_REQUEST_1_HEX, ready] }), 15_000);

describe("a CGI's stderr comes while its stdout waits for a full connection", () => {
  for (const mode of [["-W", "1"], ["-l", "-f"]]) {
    test(`fastcgi, ${mode.join(" ")}: both streams wait for the same drain and both go on: the whole answer, stderr's budget and its note, END_REQUEST`, async () => {
      using dir = tempDir();
      const [ready, count] = [join(dir.path, "ready"), join(dir.path, "count")];
      const cgi = writeExecutable(join(dir.path, "both.cgi"), fillThenStderr(ready, count));
      await using server = await startServer(["--fastcgi", ...mode, "-p", cgi, "-s", "0"], { env: { PATH: "/usr/bin:/bin" } });
      const request = Buffer.concat([begin(1), record(4, 1, pairs([["REQUEST_METHOD", "GET"], ["CONTENT_LENGTH", "0"]])), record(4, 1), record(5, 1)]);
      const parsed = parseRecords(await readerAfter(server.target, request, ready));
      expect(endRequests(parsed)).toEqual([{ id: 1, app: 0, protocol: 0 }]);
      expect(parsed.stdout.replace(/^[^]*?\r\n\r\n/, "").length).toBe(Number(await Bun.file(count).text()));
      expect(parsed.stderr).toBe(`${"e".repeat(REQUEST_BUDGET)}\n... ${70000 - REQUEST_BUDGET} bytes of stderr dropped\n`);
    }, 30_000);
  }
});
