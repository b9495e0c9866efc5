// SCGI faults: a header that drips in must not hold a worker past an
// absolute deadline, and a CGI that answers without reading its body must
// not lose its answer to a reset; a refused header's -v line shows the
// client's bytes quoted, never as lines of their own.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { Socket } from "bun";
import { exchange, startServer, tempDir, waitFor, type Target, writeExecutable } from "./harness.ts";
import { noNginx, scgiRequest, startNginx } from "./gateway-peers.ts";

const modes = [
  { name: "-W 2", args: ["-W", "2"] },
  { name: "-l -f", args: ["-l", "-f"] },
];

const script = (dir: string, name: string, body: string): string => writeExecutable(join(dir, name), `#!/bin/sh\n${body}`);

const ENV_CGI = `printf 'Content-Type: text/plain\\r\\n\\r\\n'\nenv\n`;
// RFC 3875 lets a CGI answer without reading its body.
const UNREAD_CGI = `printf 'Status: 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nanswered without reading\\n'\n`;

/** Connects and sends `bytes` one at a time, every `everyMs`; resolves when the server closes, with the ms since connecting. */
async function drip(target: Target, bytes: Uint8Array, everyMs: number, giveUpMs: number): Promise<number> {
  let closedAt: number | undefined;
  const handlers = { data() {}, close: () => void (closedAt ??= Date.now()), error: () => void (closedAt ??= Date.now()) };
  const socket: Socket<undefined> =
    typeof target === "number"
      ? await Bun.connect({ hostname: "127.0.0.1", port: target, socket: handlers })
      : await Bun.connect({ unix: target, socket: handlers });
  const connectedAt = Date.now();
  let sent = 0;
  // The drip's pace is the behaviour under test.
  const timer = setInterval(() => {
    if (closedAt === undefined && sent < bytes.length) socket.write(bytes.subarray(sent, ++sent));
  }, everyMs);
  try {
    await waitFor("the server to close the dripping connection", () => closedAt !== undefined, giveUpMs);
    return closedAt! - connectedAt;
  } finally {
    clearInterval(timer);
    socket.end();
  }
}

describe.each(modes)("SCGI with $name", ({ args }) => {
  test("a header sent a byte every 0.5 s is cut at --timeout from the connect, not from the last byte", async () => {
    using dir = tempDir();
    const cgi = script(dir.path, "env.cgi", ENV_CGI);
    await using server = await startServer(["--scgi", ...args, "--timeout", "2", "-p", cgi, "-s", "0"]);
    // 0.5 s a byte: the whole header would take about 14 s.
    const request = scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"]]);
    const heldMs = await drip(server.target, request, 500, 8000);
    expect(heldMs).toBeLessThan(3000);
    expect(heldMs).toBeGreaterThan(1500);
    await waitFor("the -v line", () => server.stderr().includes("scgi: no complete header in time"));
    // The worker is free again: a normal request is served.
    const reply = await exchange(server.target, request);
    expect(reply.data.toString()).toContain("GATEWAY_INTERFACE=CGI/1.1");
  });

  test("a body that stops coming is let go at --timeout: the CGI never runs (the whole body comes first), the worker serves the next", async () => {
    using dir = tempDir();
    const cgi = script(dir.path, "unread.cgi", UNREAD_CGI);
    const one = args[0] === "-W" ? ["-W", "1"] : args; // one worker: a second request shows it is free again
    await using server = await startServer(["--scgi", ...one, "--timeout", "1", "-p", cgi, "-s", "0"]);
    const started = Date.now();
    // 3 of the 1000 bytes CONTENT_LENGTH promises, then nothing (and no EOF).
    const reply = await exchange(server.target, scgiRequest([["CONTENT_LENGTH", "1000"], ["SCGI", "1"]], new Uint8Array(3)), { halfClose: false });
    expect(reply.data.toString()).toBe("");
    await waitFor("the -v line", () => server.stderr().includes("scgi: connection timed out in the body"));
    const next = await exchange(server.target, scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"]]));
    expect(next.data.toString()).toContain("answered without reading");
    expect(Date.now() - started).toBeLessThan(3000);
  });

  test.skipIf(noNginx)("through nginx, 12 POSTs of 8 MB to a CGI that does not read its body all get its answer", async () => {
    using dir = tempDir();
    const cgi = script(dir.path, "unread.cgi", UNREAD_CGI);
    const pool = args[0] === "-W" ? ["-W", "4"] : args;
    await using server = await startServer(["--scgi", ...pool, "-p", cgi, "-s", "0"]);
    await using nginx = await startNginx(dir.path, "scgi", server.target, { maxBody: "16m" });
    const body = new Uint8Array(8 << 20).fill(0x61);
    const answers: string[] = [];
    for (let i = 0; i < 12; i++) {
      // nginx answers 502 when the reset reaches it first, or drops the client's connection.
      const answer = nginx.fetch(`/upload`, { method: "POST", body }).then(async (r) => `${r.status} ${await r.text()}`);
      answers.push(await answer.catch((e: Error) => `failed: ${e.message.slice(0, 40)}`));
    }
    expect(answers).toEqual(Array.from({ length: 12 }, () => "200 answered without reading\n"));
  }, 60000);
});

describe.each(modes)("a refused header's -v line, with $name", ({ args }) => {
  test("a name or CONTENT_LENGTH holding a newline makes no line of its own", async () => {
    using dir = tempDir();
    await using server = await startServer(["--scgi", ...args, "-p", script(dir.path, "env.cgi", ENV_CGI), "-s", "0"]);
    const header = (pairs: string) => `${Buffer.byteLength(pairs)}:${pairs},`;
    await exchange(server.target, header("CONTENT_LENGTH\0x\nsocket: forged\0SCGI\x001\0"));
    await exchange(server.target, header("CONTENT_LENGTH\x000\0SCGI\x001\0X\nsocket: forged\0v\0X\nsocket: forged\0v\0"));
    await waitFor("both -v lines", () => server.stderr().includes("is not a number") && server.stderr().includes("sent twice"));
    expect(server.stderr()).toContain('scgi: CONTENT_LENGTH "x\\nsocket: forged" is not a number\n');
    expect(server.stderr()).toContain('scgi: variable "X\\nsocket: forged" sent twice\n');
    expect(server.stderr().split("\n").filter((line) => line.startsWith("socket: forged"))).toEqual([]);
  });
});

describe.each(modes)("a request without a body, with $name", ({ args }) => {
  test("the CGI's stdin is empty: one reading to EOF answers at once, and gets nothing the client sends after the header", async () => {
    using dir = tempDir();
    const cgi = script(dir.path, "read-all.cgi", `printf 'Content-Type: text/plain\\r\\n\\r\\n'\nprintf 'stdin:[%s]\\n' "$(cat)"\n`);
    await using server = await startServer(["--scgi", ...args, "-p", cgi, "-s", "0"]);
    // The connection stays open (no half-close) with bytes past CONTENT_LENGTH 0 on it.
    const reply = await exchange(server.target, Buffer.concat([scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"]]), Buffer.from("not the body\n")]), { halfClose: false });
    expect(reply.data.toString()).toBe("Content-Type: text/plain\r\n\r\nstdin:[]\n");
  });
});
