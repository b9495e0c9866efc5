// FastCGI output without copying: in a pool worker the CGI's
// stdout is spliced into the connection, each FCGI_STDOUT header written
// before the bytes it frames. A 20 MB answer must arrive byte-exact, both
// spoken to directly and through nginx, and the worker must not have read
// or written those bytes itself (/proc/PID/io: splice(2) moves them inside
// the kernel, and read/write counts, rchar/wchar, stay far below 20 MB).
import { describe, expect, test } from "bun:test";
import { chmodSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { startServer, tempDir, waitFor, workersOf } from "./harness.ts";
import { endRequests, fcgiGet, noNginx, parseRecords, startNginx } from "./gateway-peers.ts";

const SIZE = 20_000_000;
const HEADER = "Content-Type: application/octet-stream\r\n\r\n";
const SHA = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** A 20 MB file of varied bytes and a CGI that sends it after its header. */
function site(dir: string): { cgi: string; file: Uint8Array } {
  const file = new Uint8Array(SIZE);
  for (let at = 0; at < SIZE; at += 65536) file.set(crypto.getRandomValues(new Uint8Array(Math.min(65536, SIZE - at))), at);
  writeFileSync(join(dir, "big"), file);
  const cgi = join(dir, "big.cgi");
  writeFileSync(cgi, `#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\necho "to stderr" >&2\ncat "${join(dir, "big")}"\n`);
  chmodSync(cgi, 0o755);
  return { cgi, file };
}

const STRACE = Bun.which("strace");

/**
 * Watches a worker's main thread with strace while `during` runs: how many
 * splice(2) calls, and how many bytes its read/write/send/recv calls moved.
 * (Not /proc/PID/io: it adds the reaped CGI's own reads and writes.)
 */
async function traced(pid: number, during: () => Promise<void>): Promise<{ splices: number; copied: number }> {
  const strace = Bun.spawn([STRACE!, "-p", String(pid), "-e", "trace=read,write,recvfrom,sendto,readv,writev,splice", "-qq"], { stderr: "pipe" });
  const log = new Response(strace.stderr).text();
  await Bun.sleep(300); // attached (strace has no readiness signal on stdout)
  await during();
  strace.kill("SIGINT");
  const lines = (await log).split("\n");
  let splices = 0;
  let copied = 0;
  for (const line of lines) {
    const m = line.match(/^(\w+)\(.*= (\d+)$/);
    if (!m) continue;
    if (m[1] === "splice") splices++;
    else copied += Number(m[2]);
  }
  return { splices, copied };
}


describe("FastCGI -W 2: a CGI's 20 MB answer is spliced, not copied", () => {
  test("directly: byte-exact, STDERR kept, END_REQUEST last, and the workers copy almost nothing", async () => {
    using dir = tempDir();
    const { cgi, file } = site(dir.path);
    await using server = await startServer(["--fastcgi", "-W", "2", "-p", cgi, "-s", "0"]);
    await waitFor("both workers", () => workersOf(server.proc.pid).length === 2);
    let data: Buffer = Buffer.alloc(0);
    // Both workers watched: either may take the connection.
    const [a, b] = workersOf(server.proc.pid);
    const request = (async () => {
      if (STRACE) await Bun.sleep(400); // both stracers attached first
      data = await fcgiGet(server.target as number, "0");
    })();
    const watch = STRACE ? await Promise.all([traced(a, () => request), traced(b, () => request)]) : (await request, []);
    const parsed = parseRecords(data);
    const stdout = Buffer.concat(parsed.records.filter((r) => r.type === 6).map((r) => r.content));
    expect(stdout.length).toBe(HEADER.length + SIZE);
    expect(stdout.subarray(0, HEADER.length).toString()).toBe(HEADER);
    expect(SHA(stdout.subarray(HEADER.length))).toBe(SHA(file));
    expect(parsed.stderr).toBe("to stderr\n");
    expect(parsed.records.every((r) => r.content.length <= 65535)).toBe(true);
    // The end: the empty STDOUT, then END_REQUEST with the program's status.
    const last = parsed.records.slice(-2);
    expect(last.map((r) => [r.type, r.content.length])).toEqual([
      [6, 0],
      [3, 8],
    ]);
    expect(endRequests(parsed)).toEqual([{ id: 1, app: 0, protocol: 0 }]);
    if (watch.length > 0) {
      expect(watch[0].splices + watch[1].splices).toBeGreaterThan(SIZE / 65535 / 2);
      expect(watch[0].copied + watch[1].copied).toBeLessThan(SIZE / 100);
    }
  }, 30000);

  test.skipIf(noNginx)("through nginx: byte-exact", async () => {
    using dir = tempDir();
    const { cgi, file } = site(dir.path);
    await using server = await startServer(["--fastcgi", "-W", "2", "-p", cgi, "-s", "0"]);
    await using nginx = await startNginx(dir.path, "fastcgi", server.target);
    const response = await nginx.fetch("/big");
    expect(response.status).toBe(200);
    const body = new Uint8Array(await response.arrayBuffer());
    expect(body.length).toBe(SIZE);
    expect(SHA(body)).toBe(SHA(file));
  }, 30000);
});
