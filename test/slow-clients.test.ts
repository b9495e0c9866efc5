// Clients that would hold a worker by being slow on purpose: a request body
// dripped a byte at a time (SCGI, FastCGI with and without CONTENT_LENGTH)
// must come at a least rate once its first --timeout (or 30 s) has passed.
// dist/socket on real sockets, one worker, so a held worker shows as a
// second client not served.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { exchange, startServer, tempDir, writeExecutable, type Target } from "./harness.ts";
import { begin, converse, fcgiRequest, pairs, record, scgiRequest } from "./gateway-peers.ts";

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
