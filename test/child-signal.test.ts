// Where a pool worker's SIGCHLD goes. posix_spawn blocks every signal on
// the worker's thread until it is back from the child's start, and a CGI
// may run and exit before then: its SIGCHLD went to another thread of the
// worker (one of Bun's), woken only to drop it. A worker is started with
// SIGCHLD blocked and keeps it so on every thread, those started later
// included: it learns of its programs' ends through pidfds. Read from
// /proc/PID/task/*/status (SigBlk: the blocked set, SIGCHLD is bit 16).
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { exchange, startServer, tempDir, waitFor, workersOf, writeExecutable, zombiesOf } from "./harness.ts";
import { endRequests, fcgiGet, parseRecords, scgiRequest } from "./gateway-peers.ts";

const SIGCHLD_BIT = 1n << 16n;

/** Each thread's name and whether it blocks SIGCHLD. */
function threads(pid: number): { name: string; blocksChild: boolean }[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const status = readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8");
    const blocked = BigInt(`0x${status.match(/^SigBlk:\s+([0-9a-f]+)/m)![1]}`);
    return { name: tid === String(pid) ? "main" : status.match(/^Name:\s+(.*)$/m)![1], blocksChild: (blocked & SIGCHLD_BIT) !== 0n };
  });
}

describe("a pool worker's SIGCHLD", () => {
  test("blocked on every thread of a worker, also after its requests; the master's mask untouched; CGIs end and are reaped as before", async () => {
    using dir = tempDir();
    const cgi = writeExecutable(join(dir.path, "exit3.cgi"), "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'\nexit 3\n");
    await using server = await startServer(["--fastcgi", "-W", "1", "-p", cgi, "-s", "0"]);
    await waitFor("the worker", () => workersOf(server.proc.pid).length === 1);
    const [worker] = workersOf(server.proc.pid);
    const port = server.target as number;
    for (let i = 0; i < 5; i++) {
      const parsed = parseRecords(await fcgiGet(port));
      expect(parsed.stdout).toBe("Content-Type: text/plain\r\n\r\nhi\n");
      expect(endRequests(parsed)).toEqual([{ id: 1, app: 3, protocol: 0 }]);
    }
    const own = threads(worker);
    expect(own.length).toBeGreaterThan(0);
    expect(own.filter((t) => !t.blocksChild)).toEqual([]);
    expect(threads(server.proc.pid).find((t) => t.name === "main")?.blocksChild).toBe(false);
    // No CGI left a zombie behind.
    expect(zombiesOf(worker)).toBe(0);
  }, 30000);

  // Started by posix_spawn (its own mask: none blocked) or by Bun.spawn (the
  // caller's mask, so the worker unblocks SIGCHLD around it): -p with
  // --timeout and SCGI with --request-timeout run on Bun's loop. Read by the
  // program's own exec (a shell blocks SIGCHLD itself while it waits for a child).
  const SIGBLK = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nexec grep SigBlk /proc/self/status\n";
  test.each([
    ["-p", []],
    ["-p with --timeout", ["--timeout", "10"]],
    ["--scgi", ["--scgi"]],
    ["--scgi with --request-timeout", ["--scgi", "--request-timeout", "10"]],
  ] as const)("a worker's program started for %s does not inherit the blocked SIGCHLD", async (_name, flags) => {
    using dir = tempDir();
    const program = writeExecutable(join(dir.path, "sigblk.cgi"), SIGBLK);
    await using server = await startServer(["-W", "1", ...flags, "-p", program, "-s", "0"]);
    const request = flags[0] === "--scgi" ? scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"]]) : "";
    const text = (await exchange(server.target, request, { halfClose: true })).data.toString();
    const blocked = BigInt(`0x${text.match(/SigBlk:\s+([0-9a-f]+)/)?.[1] ?? "ffff"}`);
    expect(blocked & SIGCHLD_BIT).toBe(0n);
  });
});
