// The prefork pool (-W), TCP and UNIX: workers exist before connections,
// are replaced, die with their master, grow and shrink, drain on TERM.
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { exchange, isAlive, launch, pidsByCommandLine, signalEach, startServer, tempDir, TIMED_PROGRAM, timeline, waitFor, workersOf } from "./harness.ts";

const kinds = [
  { name: "TCP", listen: (_dir: string) => "0" },
  { name: "UNIX", listen: (dir: string) => join(dir, "pool.sock") },
];

describe.each(kinds)("pool on $name", ({ listen }) => {
  test("N workers wait before the first connection; 200 connections, 8 at a time, all byte-exact", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "cat", "-l", "-f", "-W", "4", "-s", listen(dir.path)]);
    await waitFor("4 workers", () => workersOf(server.proc.pid).length === 4);
    const before = workersOf(server.proc.pid).sort();
    let next = 0;
    const failures: string[] = [];
    const lane = async () => {
      while (next < 200) {
        const i = next++;
        const payload = `${i}:`.padEnd(1 + (i * 997) % 70_000, String.fromCharCode(97 + (i % 26)));
        const reply = await exchange(server.target, payload);
        if (reply.data.toString() !== payload) failures.push(`connection ${i}`);
      }
    };
    await Promise.all(Array.from({ length: 8 }, lane));
    expect(failures).toEqual([]);
    // Reused, not replaced: the default has no per-worker limit.
    expect(workersOf(server.proc.pid).sort()).toEqual(before);
  }, 30_000);

  test("the N+1th simultaneous connection waits, and is served when one ends", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", TIMED_PROGRAM, "-W", "2", "-s", listen(dir.path)]);
    await waitFor("2 workers", () => workersOf(server.proc.pid).length === 2);
    const times = (await Promise.all(Array.from({ length: 3 }, () => exchange(server.target, "")))).map(timeline);
    times.sort((x, y) => x.start - y.start);
    expect(times[1].start).toBeLessThan(times[0].end); // two at once
    expect(times[2].start).toBeGreaterThanOrEqual(Math.min(times[0].end, times[1].end)); // the third waited
    expect(workersOf(server.proc.pid).length).toBe(2); // and no third worker was made
  });

  test("--max-requests 1: each worker serves one connection and is replaced", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "cat", "-W", "2", "--max-requests", "1", "-s", listen(dir.path)]);
    await waitFor("2 workers", () => workersOf(server.proc.pid).length === 2);
    for (let i = 0; i < 4; i++) expect((await exchange(server.target, `r${i}`)).data.toString()).toBe(`r${i}`);
    // The master's log names every worker: 2 at start + one replacement per connection.
    const started = () => [...server.stderr().matchAll(/pool: worker (\d+) started/g)].map((m) => m[1]);
    await waitFor("4 replacements", () => started().length === 6 && workersOf(server.proc.pid).length === 2);
    expect(new Set(started()).size).toBe(6);
    expect(server.stderr().match(/ended \(served its --max-requests\)/g)?.length).toBe(4);
  });

  test("a worker killed with SIGKILL is replaced", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "cat", "-W", "3", "-s", listen(dir.path)]);
    await waitFor("3 workers", () => workersOf(server.proc.pid).length === 3);
    const [victim] = workersOf(server.proc.pid);
    process.kill(victim, "SIGKILL");
    await waitFor("a replacement", () => {
      const now = workersOf(server.proc.pid);
      return now.length === 3 && !now.includes(victim);
    }, 2000);
    expect((await exchange(server.target, "still")).data.toString()).toBe("still");
    await waitFor("the log line", () => server.stderr().includes(`pool: worker ${victim} ended (killed by SIGKILL)`));
    const from = typeof server.target === "number" ? "inet: connection from 127.0.0.1" : `unix: connection from ${server.target}`;
    expect(server.stderr()).toContain(from); // -v: workers say who connected, as socket(1) did
  });

  test("SIGKILL to the master leaves no worker within one second", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "cat", "-W", "4", "-s", listen(dir.path)]);
    await waitFor("4 workers", () => workersOf(server.proc.pid).length === 4);
    const workers = workersOf(server.proc.pid);
    server.proc.kill("SIGKILL");
    await waitFor("every worker gone", () => workers.every((pid) => !isAlive(pid)), 1000);
    if (typeof server.target === "number") {
      // Nothing holds the port: it can be bound again at once.
      await using again = await startServer(["-p", "cat", "-W", "1", "-s", String(server.target)]);
      expect((await exchange(again.target, "free")).data.toString()).toBe("free");
    }
  });

  test("SIGTERM during a slow request lets it finish, then exits 241 and cleans up", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "sleep 0.8; echo finished", "-W", "2", "-s", listen(dir.path)]);
    await waitFor("2 workers", () => workersOf(server.proc.pid).length === 2);
    const workers = workersOf(server.proc.pid);
    const slow = exchange(server.target, "");
    await waitFor("the request to be taken", () => server.stderr().includes("status: 1/2"));
    server.proc.kill("SIGTERM");
    expect((await slow).data.toString()).toBe("finished\n");
    expect(await server.proc.exited).toBe(241);
    expect(server.stderr()).toContain("\nTermination signal occured, exiting\n");
    expect(workers.every((pid) => !isAlive(pid))).toBe(true);
    if (typeof server.target === "string") expect(existsSync(server.target)).toBe(false);
  });

  test("a client that is silent for a while is still served (no timeout leaks from the listener)", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "cat", "-W", "1", "-s", listen(dir.path)]);
    const late = await new Promise<string>((resolve, reject) => {
      let got = "";
      const handlers = {
        // Silent for 0.8 s: the behaviour under test.
        open: (s: import("bun").Socket<undefined>) => void setTimeout(() => (s.write("late"), s.shutdown()), 800),
        data: (_s: unknown, d: Buffer) => void (got += d.toString()),
        end: (s: import("bun").Socket<undefined>) => void s.end(),
        close: () => resolve(got),
        error: (_s: unknown, e: Error) => reject(e),
      };
      const target = server.target;
      (typeof target === "number"
        ? Bun.connect({ hostname: "127.0.0.1", port: target, socket: handlers, allowHalfOpen: true })
        : Bun.connect({ unix: target, socket: handlers })
      ).catch(reject);
    });
    expect(late).toBe("late");
  });

  test("programs get the UCSPI environment", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", 'echo "$PROTO $TCPREMOTEIP$UNIXREMOTEPID"', "-W", "1", "-s", listen(dir.path)]);
    const reply = (await exchange(server.target, "")).data.toString();
    expect(reply).toBe(typeof server.target === "number" ? "TCP 127.0.0.1\n" : `UNIX ${process.pid}\n`);
  });

  test("an idle worker's main thread wakes less than once a second (no timer)", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "cat", "-W", "3", "-s", listen(dir.path)]);
    await waitFor("3 workers", () => workersOf(server.proc.pid).length === 3);
    expect((await exchange(server.target, "warm")).data.toString()).toBe("warm");
    await waitFor("the worker idle again", () => server.stderr().endsWith("status: 0/3\n"));
    const wakeups = (pid: number) =>
      Number(readFileSync(`/proc/${pid}/task/${pid}/status`, "utf8").match(/^voluntary_ctxt_switches:\s+(\d+)/m)?.[1]);
    const workers = workersOf(server.proc.pid);
    const before = workers.map(wakeups);
    await Bun.sleep(2000); // the window the wakeups are counted over: the behaviour under test
    // Waiting in epoll_wait with no timeout: 0 here (a 250 ms accept tick made it 8 to 10).
    for (const [i, pid] of workers.entries()) expect(wakeups(pid) - before[i]).toBeLessThan(2);
  });

  test("retiring an idle worker reaches it at once through the control socket", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "cat", "-W", "1:2", "--ramp", "burst", "--idle-timeout", "0.2", "-s", listen(dir.path)]);
    await waitFor("1 worker", () => workersOf(server.proc.pid).length === 1);
    expect((await exchange(server.target, "burst")).data.toString()).toBe("burst");
    await waitFor("the burst", () => server.stderr().match(/worker \d+ started/g)?.length === 2);
    await waitFor("back to one worker", () => workersOf(server.proc.pid).length === 1 && server.stderr().includes("(retired)"), 5000);
    expect((await exchange(server.target, "after")).data.toString()).toBe("after");
  });

  test("the copy loop works in workers too (-c)", async () => {
    using dir = tempDir();
    await using server = await startServer(["-c", "-p", "cat", "-W", "2", "-s", listen(dir.path)]);
    expect((await exchange(server.target, "a\r\nb\n")).data.toString()).toBe("a\r\nb\r\n");
  });
});

describe("dynamic pool", () => {
  test("grows under load up to MAX, a spare started on each accept, and shrinks back to MIN", async () => {
    await using server = await startServer(["-p", "sleep 1; cat", "-W", "1:4", "--idle-timeout", "0.5", "-s", "0"]);
    await waitFor("1 worker", () => workersOf(server.proc.pid).length === 1);
    const load = Promise.all(Array.from({ length: 4 }, (_, i) => exchange(server.target, `g${i}`, { ms: 10_000 })));
    await waitFor("growth to 4", () => workersOf(server.proc.pid).length === 4, 3000);
    expect((await load).map((r) => r.data.toString())).toEqual(["g0", "g1", "g2", "g3"]);
    expect(workersOf(server.proc.pid).length).toBeLessThanOrEqual(4);
    await waitFor("shrinking to 1", () => workersOf(server.proc.pid).length === 1, 6000);
    expect(server.stderr()).toContain("(retired)");
  }, 20_000);

  test("--ramp burst: the first busy moment starts every worker up to MAX", async () => {
    await using server = await startServer(["-p", "sleep 0.5; cat", "-W", "1:6", "--ramp", "burst", "-s", "0"]);
    await waitFor("1 worker", () => workersOf(server.proc.pid).length === 1);
    const reply = exchange(server.target, "burst");
    await waitFor("6 workers", () => workersOf(server.proc.pid).length === 6, 3000);
    expect((await reply).data.toString()).toBe("burst");
  });

  test("a worker that dies at once is restarted with backoff, not in a tight loop", async () => {
    await using server = await startServer(["-p", "cat", "-W", "1", "-s", "0"]);
    const seen = new Set<number>();
    const end = Date.now() + 2000;
    while (Date.now() < end) {
      for (const pid of workersOf(server.proc.pid)) {
        seen.add(pid);
        process.kill(pid, "SIGKILL");
      }
      await Bun.sleep(5); // the pace of the killing, not a wait for anything
    }
    // 100, 200, 400, 800 ms: a handful of restarts in 2 s, not hundreds.
    expect(seen.size).toBeGreaterThan(2);
    expect(seen.size).toBeLessThan(12);
    // And it recovers: after the last backoff a worker serves again.
    await waitFor("a worker", () => workersOf(server.proc.pid).length === 1, 6000);
    expect((await exchange(server.target, "back")).data.toString()).toBe("back");
  }, 15_000);
});

describe("pool and daemon", () => {
  test("-b with -W: the daemonized master still runs the pool", async () => {
    using dir = tempDir();
    const path = join(dir.path, "daemon-pool.sock");
    await using starter = launch(["-b", "-p", "cat", "-W", "2", "-s", path]);
    expect(await starter.exited()).toBe(0);
    try {
      await waitFor("the socket", () => existsSync(path));
      expect((await exchange(path, "daemon pool")).data.toString()).toBe("daemon pool");
    } finally {
      signalEach(pidsByCommandLine(path), "SIGTERM");
      await waitFor("the daemon to clean up", () => !existsSync(path));
    }
  });
});

describe("dynamic pool spares", () => {
  test("a spare that never served is retired too when the pool shrinks", async () => {
    await using server = await startServer(["-p", "cat", "-W", "1:3", "--idle-timeout", "0.3", "-s", "0"]);
    await waitFor("1 worker", () => workersOf(server.proc.pid).length === 1);
    // One connection: its worker says busy, so a spare is started; the spare never serves.
    expect((await exchange(server.target, "one")).data.toString()).toBe("one");
    await waitFor("the spare", () => server.stderr().match(/worker \d+ started/g)?.length === 2);
    await waitFor("shrinking back to MIN", () => workersOf(server.proc.pid).length === 1 && server.stderr().includes("(retired)"), 5000);
  });
});
