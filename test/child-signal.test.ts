// Where a pool worker's SIGCHLD goes. posix_spawn blocks every signal on
// the worker's thread until it is back from the child's start, and a CGI
// may run and exit before then: its SIGCHLD went to another thread of the
// worker (one of Bun's), woken only to drop it. A worker is started with
// SIGCHLD blocked, so Bun's threads keep it blocked, and its JavaScript
// thread unblocks it: the signal waits for that thread. Read from
// /proc/PID/task/*/status (SigBlk: the blocked set, SIGCHLD is bit 16).
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { startServer, tempDir, waitFor, workersOf, writeExecutable } from "./harness.ts";
import { endRequests, fcgiGet, parseRecords } from "./gateway-peers.ts";

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
  test("taken by its JavaScript thread alone; the master's mask is untouched; CGIs end and are reaped as before", async () => {
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
    expect(own.find((t) => t.name === "main")?.blocksChild).toBe(false);
    const others = own.filter((t) => t.name !== "main");
    expect(others.length).toBeGreaterThan(0);
    expect(others.filter((t) => !t.blocksChild)).toEqual([]);
    expect(threads(server.proc.pid).find((t) => t.name === "main")?.blocksChild).toBe(false);
    // No CGI left a zombie behind.
    const zombies = readdirSync("/proc").filter((p) => /^\d+$/.test(p)).filter((p) => {
      try {
        const stat = readFileSync(`/proc/${p}/stat`, "utf8");
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        return fields[0] === "Z" && Number(fields[1]) === worker;
      } catch {
        return false;
      }
    });
    expect(zombies).toEqual([]);
  }, 30000);
});
