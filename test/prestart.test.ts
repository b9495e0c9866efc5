// --prestart (the program waits for its connection; splice bridge) and -q
// without copying, TCP and UNIX, against the compiled binary.
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { childrenOf, exchange, isAlive, run, startServer, tempDir, waitFor, workersOf, zombiesOf, type Server } from "./harness.ts";

const kinds = [
  { name: "TCP", listen: (_dir: string) => "0" },
  { name: "UNIX", listen: (dir: string) => join(dir, "prestart.sock") },
];


/** Each worker has its program waiting: one live child per worker. */
async function programsWaiting(server: Server, workers: number): Promise<number[]> {
  let programs: number[] = [];
  await waitFor(`${workers} workers with a program waiting`, () => {
    const pids = workersOf(server.proc.pid);
    programs = pids.flatMap(childrenOf);
    return pids.length === workers && programs.length === workers;
  });
  return programs;
}

/** voluntary_ctxt_switches of a process's main thread. */
function wakeups(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/task/${pid}/status`, "utf8").match(/^voluntary_ctxt_switches:\s+(\d+)/m)?.[1]);
}

describe.each(kinds)("--prestart on $name", ({ listen }) => {
  test("200 connections, 8 at a time, byte-exact; no zombie after 1,000", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "cat", "-W", "2", "--prestart", "-s", listen(dir.path)]);
    await programsWaiting(server, 2);
    const workers = workersOf(server.proc.pid).sort();
    let next = 0;
    const failures: string[] = [];
    const lane = async () => {
      while (next < 1000) {
        const i = next++;
        const payload = i < 200 ? `${i}:`.padEnd(1 + (i * 997) % 70_000, String.fromCharCode(97 + (i % 26))) : `${i}`;
        const reply = await exchange(server.target, payload);
        if (reply.data.toString() !== payload) failures.push(`connection ${i}`);
      }
    };
    await Promise.all(Array.from({ length: 8 }, lane));
    expect(failures).toEqual([]);
    expect(workersOf(server.proc.pid).sort()).toEqual(workers); // reused
    await programsWaiting(server, 2);
    expect(workers.map(zombiesOf)).toEqual(workers.map(() => 0));
  }, 60_000);

  test("100 MB arrive intact (SHA-256)", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "cat", "-W", "1", "--prestart", "-s", listen(dir.path)]);
    const payload = new Uint8Array(100 * 1024 * 1024);
    for (let i = 0; i < payload.length; i += 65536) crypto.getRandomValues(payload.subarray(i, i + 65536));
    const reply = await exchange(server.target, payload, { ms: 30_000 });
    const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
    expect(reply.data.length).toBe(payload.length);
    expect(sha(reply.data)).toBe(sha(payload));
  }, 40_000);

  test("the peer's half-close is EOF for the program, and its whole answer arrives", async () => {
    using dir = tempDir();
    // wc answers only at EOF; seq makes the answer larger than any pipe or socket buffer.
    await using server = await startServer(["-p", "wc -c; seq 1 100000", "-W", "1", "--prestart", "-s", listen(dir.path)]);
    const expected = `5000\n${Array.from({ length: 100000 }, (_, i) => i + 1).join("\n")}\n`;
    const reply = await exchange(server.target, "x".repeat(5000));
    expect(reply.data.toString().replace(/^ +/, "")).toBe(expected);
    // -v: socket(1)'s lines, from the worker
    const from = typeof server.target === "number" ? "inet: connection from 127.0.0.1" : `unix: connection from ${server.target}`;
    expect(server.stderr()).toContain(from);
    expect(server.stderr()).toContain("connection closed by peer");
  });

  test("a waiting program that is killed is reaped at once (no zombie) and replaced; the next connection is served", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", 'read x; echo "got $x"', "-W", "1", "--prestart", "-s", listen(dir.path)]);
    const [victim] = await programsWaiting(server, 1);
    const [worker] = workersOf(server.proc.pid);
    process.kill(victim, "SIGKILL");
    await waitFor("the victim reaped", () => processGone(victim));
    const [replacement] = await programsWaiting(server, 1);
    expect(replacement).not.toBe(victim);
    expect(workersOf(server.proc.pid)).toEqual([worker]); // the worker itself goes on
    expect(server.stderr()).toContain(`program ${victim} ended before its connection (killed by SIGKILL)`);
    expect((await exchange(server.target, "hi\n")).data.toString()).toBe("got hi\n");
  });

  test("a program that exits at once the first time is replaced after the backoff, never handed a connection", async () => {
    using dir = tempDir();
    const marker = join(dir.path, "second");
    const command = `if [ -e ${marker} ]; then cat; else touch ${marker}; echo stale; exit 3; fi`;
    await using server = await startServer(["-p", command, "-W", "1", "--prestart", "-s", listen(dir.path)]);
    await waitFor("the first program to end", () => server.stderr().includes("ended before its connection (exit 3)"));
    expect((await exchange(server.target, "fresh")).data.toString()).toBe("fresh"); // nothing "stale"
  });

  test("programs get PROTO and the local address, and no remote address", async () => {
    using dir = tempDir();
    const where = listen(dir.path);
    const command = 'read x; echo "$PROTO $TCPLOCALPORT$UNIXLOCALPATH [$TCPREMOTEIP$TCPREMOTEPORT$UNIXREMOTEPID]"';
    await using server = await startServer(["-p", command, "-W", "1", "--prestart", "-s", where]);
    const reply = (await exchange(server.target, "\n")).data.toString();
    expect(reply).toBe(typeof server.target === "number" ? `TCP ${server.target} []\n` : `UNIX ${where} []\n`);
  });

  test("-c goes through the copy loop with a prestarted program", async () => {
    using dir = tempDir();
    await using server = await startServer(["-c", "-p", "cat", "-W", "1", "--prestart", "-s", listen(dir.path)]);
    expect((await exchange(server.target, "a\r\nb\n")).data.toString()).toBe("a\r\nb\r\n");
  });

  test("--max-requests 2: the worker is replaced after two connections and leaves no program behind", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "cat", "-W", "1", "--max-requests", "2", "--prestart", "-s", listen(dir.path)]);
    const [first] = await programsWaiting(server, 1);
    for (let i = 0; i < 4; i++) expect((await exchange(server.target, `m${i}`)).data.toString()).toBe(`m${i}`);
    await waitFor("two replacements", () => server.stderr().match(/served its --max-requests/g)?.length === 2);
    await programsWaiting(server, 1);
    expect(isAlive(first)).toBe(false);
  });

  test("--timeout: a silent connection is closed, and its program killed --timeout later (-v says so)", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "read x; sleep 30", "-W", "1", "--prestart", "--timeout", "0.3", "-s", listen(dir.path)]);
    const reply = await exchange(server.target, "x\n", { halfClose: false });
    expect(reply.data.length).toBe(0);
    await waitFor("the kill", () => /program \d+ killed: still running --timeout/.test(server.stderr()));
    expect(server.stderr()).toContain("connection timed out");
    await programsWaiting(server, 1); // and the worker went on
  });

  test("SIGTERM lets the connection in hand finish, ends the waiting programs, exits 241", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "read x; sleep 0.8; echo finished", "-W", "2", "--prestart", "-s", listen(dir.path)]);
    const programs = await programsWaiting(server, 2);
    const workers = workersOf(server.proc.pid);
    const slow = exchange(server.target, "go\n");
    await waitFor("the request to be taken", () => server.stderr().includes("status: 1/2"));
    server.proc.kill("SIGTERM");
    expect((await slow).data.toString()).toBe("finished\n");
    expect(await server.proc.exited).toBe(241);
    await waitFor("every worker and program gone", () => [...workers, ...programs].every((pid) => !isAlive(pid)), 2000);
    if (typeof server.target === "string") expect(existsSync(server.target)).toBe(false);
  });

  test("SIGKILL to the master leaves no worker within one second", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "cat", "-W", "2", "--prestart", "-s", listen(dir.path)]);
    await programsWaiting(server, 2);
    const workers = workersOf(server.proc.pid);
    server.proc.kill("SIGKILL");
    await waitFor("every worker gone", () => workers.every((pid) => !isAlive(pid)), 1000);
    if (typeof server.target === "number") {
      await using again = await startServer(["-p", "cat", "-W", "1", "--prestart", "-s", String(server.target)]);
      expect((await exchange(again.target, "free")).data.toString()).toBe("free");
    }
  });

  test("an idle worker's main thread wakes less than once a second", async () => {
    using dir = tempDir();
    await using server = await startServer(["-p", "cat", "-W", "2", "--prestart", "-s", listen(dir.path)]);
    await programsWaiting(server, 2);
    expect((await exchange(server.target, "warm")).data.toString()).toBe("warm");
    await programsWaiting(server, 2);
    const workers = workersOf(server.proc.pid);
    const before = workers.map(wakeups);
    await Bun.sleep(2000); // the window the wakeups are counted over: the behaviour under test
    const woke = workers.map((pid, i) => wakeups(pid) - before[i]);
    for (const n of woke) expect(n).toBeLessThan(2);
  });
});

/** Gone from the process table (reaped), not merely dead. */
function processGone(pid: number): boolean {
  try {
    readFileSync(`/proc/${pid}/stat`);
    return false;
  } catch {
    return true;
  }
}

/** -q with a program whose output closes while it runs on: `MARK` appears when it ends. */
function quitProgram(dir: string): { command: string; mark: string; pidFile: string } {
  const mark = join(dir, "ended");
  const pidFile = join(dir, "pid");
  // Output ends (stdout and stderr closed) long before the program does, which
  // outlives the second after the close at which socket used to kill it.
  const command = `echo $$ > ${pidFile}; echo hi; exec >&- 2>&-; sleep 1.5; touch ${mark}`;
  return { command, mark, pidFile };
}

describe.each([
  // What the program's stdin and stdout are tells which path served it.
  { name: "pool worker (splice)", args: ["-W", "1"], stdio: "socket fifo" },
  { name: "pool worker with --prestart", args: ["-W", "1", "--prestart"], stdio: "fifo fifo" },
  { name: "classic -f server (copy loop)", args: ["-l", "-f"], stdio: "socket socket" },
])("-q in a $name", ({ args, stdio }) => {
  test("the program's stdin and stdout", async () => {
    await using server = await startServer(["-q", "-p", "stat -L -c %F /dev/stdin /dev/stdout", ...args, "-s", "0"]);
    const reply = await exchange(server.target, "");
    expect(reply.data.toString().split("\n").join(" ").trim()).toBe(stdio);
  });

  test.each(kinds)("$name: closes when the program's output ends; the program runs on to its end", async ({ listen }) => {
    using dir = tempDir();
    const { command, mark, pidFile } = quitProgram(dir.path);
    await using server = await startServer(["-q", "-p", command, ...args, "-s", listen(dir.path)]);
    const reply = await exchange(server.target, "", { halfClose: false });
    expect(reply.data.toString()).toBe("hi\n");
    // The client saw the end before the program ended, and the program was not killed at the close.
    expect(existsSync(mark)).toBe(false);
    const pid = Number(readFileSync(pidFile, "utf8"));
    expect(isAlive(pid)).toBe(true);
    await waitFor("the program to finish its work", () => existsSync(mark), 5000);
    expect(server.stderr()).toContain("connection closed");
  });
});

test("--prestart needs -W", async () => {
  const { status, stderr } = await run(["--prestart", "-p", "cat", "-s", "0"]);
  expect(status).toBe(15);
  expect(stderr).toContain("--prestart needs -W");
});

test.each([[], ["--prestart"]])("TERM to the whole process group (Ctrl-C style) lets a worker finish its connection %p", async (...extra) => {
  // The harness starts the server as the leader of its own process group, which the test can signal as a terminal would.
  // The program leaves a mark once its trap is set: TERM before that would end it, rightly.
  using marks = tempDir();
  const program = `trap "" TERM; touch ${marks.path}/$$; read x; sleep 0.5; echo finished`;
  await using server = await startServer(["-p", program, "-W", "2", ...extra, "-s", "0"]);
  expect(readFileSync(`/proc/${server.proc.pid}/stat`, "utf8").split(" ")[4]).toBe(String(server.proc.pid)); // its group
  const slow = exchange(server.target, "go\n");
  await waitFor("the request to be taken", () => server.stderr().includes("status: 1/2"));
  await waitFor("the program's trap", () => readdirSync(marks.path).length > 0);
  process.kill(-server.proc.pid, "SIGTERM");
  expect((await slow).data.toString()).toBe("finished\n");
  expect(await server.proc.exited).toBe(241);
});
