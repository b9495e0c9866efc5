// No request body is lost, whatever order the CGI reads and writes in: a CGI
// that writes its header before reading its body (git-http-backend does)
// gets every byte through nginx, which stops sending the body once it relays
// the answer's header; and a FastCGI body sent with no CONTENT_LENGTH
// (Apache's mod_proxy_fcgi, chunked) reaches the CGI whole, with one.
import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { exchange, startServer, tempDir, waitFor } from "./harness.ts";
import { fcgiRequest, noNginx, parseRecords, scgiRequest, startNginx, PROTOCOLS } from "./gateway-peers.ts";

if (noNginx) console.warn("body.test.ts: nginx is not installed (scripts/install-test-deps.sh installs it); the nginx tests are skipped");

const SHA = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** The header first, then the body's hash, and CONTENT_LENGTH as the CGI saw it. */
const HASH_CGI = `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho "length $CONTENT_LENGTH"\nhead -c "$CONTENT_LENGTH" | sha256sum\n`;
/** 3 MB of answer before it reads a byte of its body: more than socket holds, so the CGI must wait, not the body. */
const BIG_FIRST_CGI = `#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\nhead -c 3000000 /dev/zero\nhead -c "$CONTENT_LENGTH" | sha256sum\n`;

function cgi(dir: string, name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  chmodSync(path, 0o755);
  return path;
}

function randomBody(size: number): Uint8Array {
  const body = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) body.set(crypto.getRandomValues(new Uint8Array(Math.min(65536, size - i))), i);
  return body;
}

const protocols = PROTOCOLS;
const modes = [
  { name: "-W 4", args: ["-W", "4"] },
  { name: "-l -f", args: ["-l", "-f"] },
];

describe.each(protocols)("$name", ({ flag, protocol }) => {
  describe.each(modes)("with $name", ({ args }) => {
    test.skipIf(noNginx)("a 5 MB POST through nginx to a CGI that writes its header first, 20 times: every hash right", async () => {
      using dir = tempDir();
      await using server = await startServer([flag, ...args, "-p", cgi(dir.path, "hash.cgi", HASH_CGI), "-s", "0"]);
      await using nginx = await startNginx(dir.path, protocol, server.target, { maxBody: "16m" });
      const body = randomBody(5 * 1024 * 1024);
      const expected = `length ${body.length}\n${SHA(body)}  -\n`;
      const answers: string[] = [];
      for (let i = 0; i < 20; i++) {
        const response = await nginx.fetch(`/push/${i}`, { method: "POST", body });
        answers.push(`${response.status} ${await response.text()}`);
      }
      expect(answers).toEqual(Array(20).fill(`200 ${expected}`));
    }, 60000);

    test.skipIf(noNginx)("a CGI that writes 3 MB before it reads its 1 MB body: both arrive whole", async () => {
      using dir = tempDir();
      await using server = await startServer([flag, ...args, "-p", cgi(dir.path, "big.cgi", BIG_FIRST_CGI), "-s", "0"]);
      await using nginx = await startNginx(dir.path, protocol, server.target, { maxBody: "16m" });
      const body = randomBody(1024 * 1024);
      const response = await nginx.fetch("/big", { method: "POST", body });
      expect(response.status).toBe(200);
      const answer = Buffer.from(await response.arrayBuffer());
      expect(answer.length).toBe(3000000 + 68);
      expect(answer.subarray(0, 3000000).every((b) => b === 0)).toBe(true);
      expect(answer.subarray(3000000).toString()).toBe(`${SHA(body)}  -\n`);
    }, 30000);
  });
});

describe("FastCGI without CONTENT_LENGTH (Apache's chunked body)", () => {
  test.each([
    ["-W 2", ["-W", "2"]],
    ["-l -f", ["-l", "-f"]],
  ])("%s: the body is read to its end and the CGI gets it whole with its CONTENT_LENGTH", async (_name, args) => {
    using dir = tempDir();
    await using server = await startServer(["--fastcgi", ...args, "-p", cgi(dir.path, "hash.cgi", HASH_CGI), "-s", "0"]);
    const body = randomBody(300000);
    const reply = await exchange(server.target, fcgiRequest(1, [["REQUEST_METHOD", "POST"]], body));
    expect(parseRecords(reply.data).stdout).toBe(`Content-Type: text/plain\r\n\r\nlength ${body.length}\n${SHA(body)}  -\n`);
    // No body at all: no CONTENT_LENGTH either (RFC 3875 4.1.2), and the CGI reads EOF at once.
    const empty = await exchange(server.target, fcgiRequest(1, [["REQUEST_METHOD", "GET"]]));
    expect(parseRecords(empty.data).stdout).toBe(`Content-Type: text/plain\r\n\r\nlength \n${SHA(new Uint8Array(0))}  -\n`);
  });
});

describe.each(protocols)("$name answers stream", ({ flag, protocol }) => {
  test.skipIf(noNginx)("with nginx's buffering off, a line written a second before the next arrives a second before it", async () => {
    using dir = tempDir();
    // The sleep is the behaviour under test: output written apart must arrive apart.
    const slow = cgi(dir.path, "slow.cgi", `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho first\nsleep 1\necho second\n`);
    await using server = await startServer([flag, "-W", "2", "-p", slow, "-s", "0"]);
    await using nginx = await startNginx(dir.path, protocol, server.target, { locations: (pass) => `location / { ${pass} ${protocol}_buffering off; }` });
    const response = await nginx.fetch("/slow");
    const arrivals: [string, number][] = [];
    const decoder = new TextDecoder();
    for await (const chunk of response.body!) arrivals.push([decoder.decode(chunk), performance.now()]);
    const text = arrivals.map(([t]) => t).join("");
    expect(text).toBe("first\nsecond\n");
    const firstAt = arrivals.find(([t]) => t.includes("first"))![1];
    const secondAt = arrivals.find(([t]) => t.includes("second"))![1];
    expect(secondAt - firstAt).toBeGreaterThan(800);
  });
});

describe("SCGI: a body over --max-body (default 100m)", () => {
  test.each([
    ["-W 2", ["-W", "2"]],
    ["-l -f", ["-l", "-f"]],
  ])("%s: 413, one -v line, nothing runs", async (_name, args) => {
    using dir = tempDir();
    const marker = join(dir.path, "ran");
    await using server = await startServer(["--scgi", ...args, "-p", cgi(dir.path, "touch.cgi", `#!/bin/sh\ntouch ${marker}\n`), "-s", "0"]);
    const reply = await exchange(server.target, scgiRequest([["CONTENT_LENGTH", String(2 ** 31)], ["SCGI", "1"]]));
    expect(reply.data.toString().startsWith("Status: 413 Payload Too Large\r\n")).toBe(true);
    await waitFor("the -v line", () => server.stderr().includes("scgi: 413: a body of 2147483648 bytes is over --max-body (104857600 bytes)"));
    expect(existsSync(marker)).toBe(false);
  });
});
