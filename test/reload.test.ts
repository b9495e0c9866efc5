// A pool's signals: HUP replaces every worker and USR2 the
// master, under continuous load, with no connection failed or refused; a
// new executable that cannot start leaves the old master serving; USR1
// reopens -b's --log; TTIN and TTOU add and remove a worker.
import { describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, existsSync, readFileSync, readlinkSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { converse, fcgiRequest, parseRecords } from "./gateway-peers.ts";
import { KEPT_IDLE_MS } from "../src/request/fastcgi-engine.ts";
import { descendantsOf, exchange, isAlive, notifyReceiver, pidsByCommandLine, run, signalEach, SOCKET, startServer, tempDir, waitFor, workersOf, type Target } from "./harness.ts";

const hasSocat = (() => {
  try {
    return Bun.spawnSync(["socat", "-V"], { stdio: ["ignore", "ignore", "ignore"] }).exitCode === 0;
  } catch {
    return false;
  }
})();
if (!hasSocat) console.warn("reload.test: socat missing: the NOTIFY_SOCKET check of USR2 is skipped");

/**
 * Continuous load: `clients` loops, each sending a payload of its own
 * (a different length every time) and checking the echo byte for byte.
 * Every failure is kept: a refused connect, a reset, a short or wrong echo.
 */
function load(target: Target, clients = 8) {
  let running = true;
  let done = 0;
  const failures: string[] = [];
  const loops = Array.from({ length: clients }, async (_, client) => {
    for (let n = 0; running; n++) {
      const payload = `client ${client} exchange ${n} ${"x".repeat((n * 397) % 3000)}\n`;
      try {
        const reply = await exchange(target, payload, { ms: 10_000 });
        if (reply.ended !== "closed") failures.push(`client ${client} #${n}: ended by ${reply.ended}`);
        else if (!reply.data.equals(Buffer.from(payload))) failures.push(`client ${client} #${n}: ${reply.data.length} bytes back of ${payload.length}`);
        else done++;
      } catch (e) {
        failures.push(`client ${client} #${n}: ${(e as Error).message}`);
      }
    }
  });
  const stop = async () => {
    running = false;
    await Promise.all(loops);
  };
  return { failures, done: () => done, stop, [Symbol.asyncDispose]: stop };
}

/** Waits until `more` further exchanges have succeeded. */
async function further(traffic: ReturnType<typeof load>, more: number): Promise<void> {
  const from = traffic.done();
  await waitFor(`${more} more exchanges`, () => traffic.done() >= from + more, 10_000);
}

const pidIn = (file: string): number => Number(readFileSync(file, "utf8").trim());

describe("HUP: graceful reload", () => {
  test("every worker is replaced under load, and no connection fails", async () => {
    await using server = await startServer(["-W", "4", "-p", "cat", "-s", "0"]);
    const master = server.proc.pid;
    await waitFor("4 workers", () => workersOf(master).length === 4);
    const before = workersOf(master);
    await using traffic = load(server.target);
    await further(traffic, 50);
    process.kill(master, "SIGHUP");
    await waitFor(
      "4 workers, none of the old ones",
      () => {
        const now = workersOf(master);
        return now.length === 4 && now.every((pid) => !before.includes(pid));
      },
      10_000,
    );
    await further(traffic, 50);
    await traffic.stop();
    expect(traffic.failures).toEqual([]);
    expect(server.stderr()).toContain("socket: HUP: replacing 4 workers");
    expect(isAlive(master)).toBe(true);
  }, 30_000);

  test("a busy worker finishes its connection before it leaves", async () => {
    await using server = await startServer(["-W", "1", "-p", "sleep 1; echo done", "-s", "0"]);
    const master = server.proc.pid;
    await waitFor("the worker", () => workersOf(master).length === 1);
    const [old] = workersOf(master);
    const reply = exchange(server.target, "", { ms: 5000 });
    await waitFor("the connection to be served", () => server.stderr().includes("inet: connection from"));
    process.kill(master, "SIGHUP");
    // The new worker comes first; the old one goes only when its program is done.
    await waitFor("the new worker", () => workersOf(master).some((pid) => pid !== old));
    expect(isAlive(old)).toBe(true);
    expect((await reply).data.toString()).toBe("done\n");
    await waitFor("the old worker to leave", () => !workersOf(master).includes(old));
  }, 15_000);

  test("--fastcgi: a connection the web server keeps holds an old worker only until the web server closes it", async () => {
    using dir = tempDir();
    const cgi = join(dir.path, "hello.cgi");
    writeFileSync(cgi, "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'\n", { mode: 0o755 });
    await using server = await startServer(["--fastcgi", "-W", "1", "-p", cgi, "-s", "0"]);
    const master = server.proc.pid;
    await waitFor("the worker", () => workersOf(master).length === 1);
    const [old] = workersOf(master);
    const client = await converse(server.target);
    client.send(fcgiRequest(1, [["A", "b"]], new Uint8Array(0), true));
    const answer = await client.until("the answer", (data) => parseRecords(data).records.some((r) => r.type === 3));
    expect(parseRecords(answer).stdout).toContain("hi");
    process.kill(master, "SIGHUP");
    // The old worker keeps the idle connection (its close could cross a request the web server sends on it: the
    // next one would end it, test/in-flight.test.ts); the web server's close, at its keepalive_timeout, ends it.
    await waitFor("the new worker", () => workersOf(master).some((pid) => pid !== old));
    expect(isAlive(old)).toBe(true);
    client.close();
    await waitFor("the old worker to leave", () => !isAlive(old));
    const again = parseRecords((await exchange(server.target, fcgiRequest(2, [["A", "b"]]))).data);
    expect(again.stdout).toContain("hi");
  }, 15_000);
});

describe("USR2: upgrade the executable", () => {
  test.skipIf(!hasSocat)("a new master takes over under load: pid file, MAINPID, and no connection fails", async () => {
    using dir = tempDir();
    const pidFile = join(dir.path, "pid");
    const notify = join(dir.path, "notify");
    await using receiver = notifyReceiver(notify);
    await waitFor("the receiver", () => existsSync(notify));
    await using server = await startServer(["-W", "4", "-p", "cat", "-s", "0", "--pid-file", pidFile], { env: { NOTIFY_SOCKET: notify } });
    const old = server.proc.pid;
    await waitFor("READY=1 and the pid file", () => receiver.text() === "READY=1" && existsSync(pidFile) && pidIn(pidFile) === old);
    await using traffic = load(server.target);
    await further(traffic, 50);
    process.kill(old, "SIGUSR2");
    expect(await server.proc.exited).toBe(0); // handed over: the old master drained and exited
    const successor = pidIn(pidFile);
    expect(successor).not.toBe(old);
    expect(isAlive(successor)).toBe(true);
    expect(workersOf(successor).length).toBe(4);
    // The successor names itself, and the old master (systemd's main process until then) names it too.
    expect(receiver.text()).toBe(`READY=1MAINPID=${successor}\nREADY=1MAINPID=${successor}`);
    await further(traffic, 50);
    await traffic.stop();
    expect(traffic.failures).toEqual([]);
    // The successor is the pool now: TERM drains it, and its pid file goes.
    process.kill(successor, "SIGTERM");
    await waitFor("the successor to end", () => !isAlive(successor));
    expect(existsSync(pidFile)).toBe(false);
  }, 30_000);

  test("the new master on a UNIX socket keeps the path, and removes it at its end", async () => {
    using dir = tempDir();
    const path = join(dir.path, "sock");
    const pidFile = join(dir.path, "pid");
    await using server = await startServer(["-W", "2", "-p", "cat", "-s", path, "--pid-file", pidFile]);
    await waitFor("the pid file", () => existsSync(pidFile) && pidIn(pidFile) === server.proc.pid);
    process.kill(server.proc.pid, "SIGUSR2");
    expect(await server.proc.exited).toBe(0);
    expect(existsSync(path)).toBe(true);
    expect((await exchange(path, "through the successor")).data.toString()).toBe("through the successor");
    const successor = pidIn(pidFile);
    process.kill(successor, "SIGTERM");
    await waitFor("the successor to end", () => !isAlive(successor));
    expect(existsSync(path)).toBe(false);
  }, 15_000);

  test("--status goes with the master: the new one answers on the same UNIX path and keeps it", async () => {
    using dir = tempDir();
    const status = join(dir.path, "status.sock");
    const pidFile = join(dir.path, "pid");
    await using server = await startServer(["-W", "2", "--status", status, "-p", "cat", "-s", "0", "--pid-file", pidFile]);
    await waitFor("the pid file", () => existsSync(pidFile) && pidIn(pidFile) === server.proc.pid);
    process.kill(server.proc.pid, "SIGUSR2");
    expect(await server.proc.exited).toBe(0);
    const page = await (await fetch("http://localhost/status", { unix: status })).text();
    expect(page).toMatch(/^pool:/m);
    const successor = pidIn(pidFile);
    process.kill(successor, "SIGTERM");
    await waitFor("the successor to end", () => !isAlive(successor));
    expect(existsSync(status)).toBe(false);
  }, 15_000);

  test.skipIf(process.getuid?.() !== 0)("after -u, the new master writes the pid file root made (it is handed the open file)", async () => {
    using dir = tempDir(); // root's, mode 700: nobody could not open a file in it
    const pidFile = join(dir.path, "pid");
    await using server = await startServer(["-u", "nobody", "-W", "2", "-p", "cat", "-s", "0", "--pid-file", pidFile]);
    await waitFor("the pid file", () => existsSync(pidFile) && pidIn(pidFile) === server.proc.pid);
    process.kill(server.proc.pid, "SIGUSR2");
    expect(await server.proc.exited).toBe(0);
    const successor = pidIn(pidFile);
    expect(successor).not.toBe(server.proc.pid);
    expect(readFileSync(`/proc/${successor}/status`, "utf8")).toMatch(/^Uid:\s+65534\s/m);
    expect((await exchange(server.target, "as nobody")).data.toString()).toBe("as nobody");
  }, 15_000);

  test("a new executable that cannot start leaves the old master serving, with a line that says why; its workers run its own image", async () => {
    using dir = tempDir();
    const copy = join(dir.path, "socket");
    copyFileSync(SOCKET, copy);
    chmodSync(copy, 0o755);
    await using server = await startServer(["-W", "2", "-p", "cat", "-s", "0"], { executable: copy });
    const master = server.proc.pid;
    await waitFor("2 workers", () => workersOf(master).length === 2);
    await using traffic = load(server.target);
    await further(traffic, 20);
    // A running executable cannot be written (ETXTBSY): operators put a new file in its place.
    const replace = (text: string, mode: number) => {
      const next = join(dir.path, "next");
      writeFileSync(next, text, { mode });
      renameSync(next, copy);
    };
    replace("not a program\n", 0o644);
    process.kill(master, "SIGUSR2");
    await waitFor("the refusal", () => server.stderr().includes(`socket: USR2: cannot start ${copy}: Permission denied; this master (${master}) serves on`));
    replace("#!/bin/sh\nexit 1\n", 0o755);
    process.kill(master, "SIGUSR2");
    await waitFor("the failure", () => /socket: USR2: the new master \d+ exited with status 1 before it served; this master \(\d+\) serves on/.test(server.stderr()));
    // HUP's workers run this master's own image, not the file now at its path.
    const before = workersOf(master);
    process.kill(master, "SIGHUP");
    await waitFor("2 new workers", () => workersOf(master).length === 2 && workersOf(master).every((w) => !before.includes(w)), 10_000);
    for (const worker of workersOf(master)) expect(readlinkSync(`/proc/${worker}/exe`)).toBe(readlinkSync(`/proc/${master}/exe`));
    await further(traffic, 20);
    await traffic.stop();
    expect(traffic.failures).toEqual([]);
    expect(isAlive(master)).toBe(true);
    expect(workersOf(master).length).toBe(2);
  }, 30_000);
});

describe("USR1: reopen --log", () => {
  test("after logrotate moved the log, new lines go to a new file at the path (master and workers)", async () => {
    using dir = tempDir();
    const log = join(dir.path, "log");
    const pidFile = join(dir.path, "pid");
    const started = await run(["-b", "--log", log, "--pid-file", pidFile, "-v", "-W", "2", "-p", "cat", "-s", "0"]);
    expect(started.status).toBe(0);
    const master = pidIn(pidFile);
    await using _daemon = {
      // -b's daemon leads its own session and process group: end all of it.
      [Symbol.asyncDispose]: async () => {
        try {
          process.kill(-master, "SIGKILL");
        } catch {
          // gone
        }
      },
    };
    const port = Number(readFileSync(log, "utf8").match(/inet: listening on port (\d+)/)![1]);
    await waitFor("2 workers", () => workersOf(master).length === 2);
    expect((await exchange(port, "before")).data.toString()).toBe("before");
    await waitFor("the connection logged", () => readFileSync(log, "utf8").includes("inet: connection from"));
    renameSync(log, `${log}.1`);
    process.kill(master, "SIGUSR1");
    await waitFor("a new log", () => existsSync(log) && readFileSync(log, "utf8").includes(`USR1: reopened ${log}`));
    // The master passes USR1 on: each worker's stderr is the new file once it has taken it.
    await waitFor("the workers to reopen too", () => workersOf(master).every((pid) => readlinkSync(`/proc/${pid}/fd/2`) === log));
    // Workers log connections: both must write to the new file now.
    for (let i = 0; i < 6; i++) expect((await exchange(port, `after ${i}`)).data.toString()).toBe(`after ${i}`);
    await waitFor("the connections in the new log", () => readFileSync(log, "utf8").split("inet: connection from").length - 1 === 6);
    expect(readFileSync(`${log}.1`, "utf8").split("inet: connection from").length - 1).toBe(1);
  }, 20_000);

  test("--fastcgi: a kept connection serves on through a reopen, however quiet it was", async () => {
    using dir = tempDir();
    const log = join(dir.path, "log");
    const pidFile = join(dir.path, "pid");
    const cgi = join(dir.path, "hello.cgi");
    writeFileSync(cgi, "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'\n", { mode: 0o755 });
    expect((await run(["-b", "--log", log, "--pid-file", pidFile, "-v", "--fastcgi", "-W", "1", "-p", cgi, "-s", "0"])).status).toBe(0);
    const master = pidIn(pidFile);
    await using _daemon = { [Symbol.asyncDispose]: async () => signalEach([-master], "SIGKILL") }; // -b: its own process group
    const port = Number(readFileSync(log, "utf8").match(/inet: listening on port (\d+)/)![1]);
    await waitFor("the worker", () => workersOf(master).length === 1);
    const client = await converse(port);
    const answers = (n: number) => client.until(`answer ${n}`, (data) => parseRecords(data).records.filter((r) => r.type === 3).length === n);
    client.send(fcgiRequest(1, [["A", "b"]], new Uint8Array(0), true));
    await answers(1);
    renameSync(log, `${log}.1`);
    process.kill(master, "SIGUSR1");
    await waitFor("the worker to reopen", () => workersOf(master).every((pid) => readlinkSync(`/proc/${pid}/fd/2`) === log));
    // Quiet longer than a stopping worker's connection may be: logrotate's nightly USR1 must not close it.
    await Bun.sleep(3 * KEPT_IDLE_MS);
    for (const id of [2, 3]) {
      client.send(fcgiRequest(id, [["A", "b"]], new Uint8Array(0), true));
      await answers(id);
    }
    expect(parseRecords(client.data()).stdout.match(/hi/g)?.length).toBe(3);
    client.close();
  }, 20_000);

  test("without --log, a pool says USR1 is ignored and serves on", async () => {
    await using server = await startServer(["-W", "1", "-p", "cat", "-s", "0"]);
    process.kill(server.proc.pid, "SIGUSR1");
    await waitFor("the line", () => server.stderr().includes("socket: USR1: no -b --log file to reopen; ignored"));
    expect((await exchange(server.target, "still here")).data.toString()).toBe("still here");
  });
});

describe("TTIN and TTOU", () => {
  test("one worker more, one fewer, never below 1", async () => {
    await using server = await startServer(["-W", "2", "-p", "cat", "-s", "0"]);
    const master = server.proc.pid;
    await waitFor("2 workers", () => workersOf(master).length === 2);
    process.kill(master, "SIGTTIN");
    await waitFor("3 workers", () => workersOf(master).length === 3);
    await waitFor("the line", () => server.stderr().includes("socket: TTIN: 3 workers"));
    process.kill(master, "SIGTTOU");
    await waitFor("2 workers again", () => workersOf(master).length === 2);
    process.kill(master, "SIGTTOU");
    await waitFor("1 worker", () => workersOf(master).length === 1);
    process.kill(master, "SIGTTOU");
    await waitFor("the refusal", () => server.stderr().includes("socket: TTOU: the pool stays at 1 workers (at least 1)"));
    expect(workersOf(master).length).toBe(1);
    expect((await exchange(server.target, "one left")).data.toString()).toBe("one left");
  }, 15_000);

  test("MIN:MAX moves both, and says so", async () => {
    await using server = await startServer(["-W", "1:3", "-p", "cat", "-s", "0"]);
    const master = server.proc.pid;
    await waitFor("MIN workers", () => workersOf(master).length >= 1);
    process.kill(master, "SIGTTIN");
    await waitFor("the line", () => server.stderr().includes("socket: TTIN: 2:4 workers (MIN and MAX move together)"));
    await waitFor("MIN is 2", () => workersOf(master).length >= 2);
  });
});

describe("signal storms", () => {
  test("100 HUPs in a second under load: no connection fails, and the pool settles at its size with nothing else left", async () => {
    await using server = await startServer(["-W", "2", "-p", "cat", "-s", "0"]);
    const master = server.proc.pid;
    await waitFor("2 workers", () => workersOf(master).length === 2);
    await using traffic = load(server.target);
    await further(traffic, 20);
    for (let i = 0; i < 100; i++) {
      process.kill(master, "SIGHUP");
      await Bun.sleep(10); // the storm's pace is the behaviour under test: each HUP lands on a pool still replacing
    }
    await further(traffic, 50);
    await traffic.stop();
    expect(traffic.failures).toEqual([]);
    // Every worker of every generation has gone but the last 2: no worker, program or zombie left over.
    await waitFor("2 workers and nothing else", () => workersOf(master).length === 2 && descendantsOf(master).length === 2, 15_000);
    expect(isAlive(master)).toBe(true);
    expect((await exchange(server.target, "after the storm")).data.toString()).toBe("after the storm");
  }, 40_000);

  test("USR2 twice: one new master serves, the old one hands over, and no connection fails", async () => {
    using dir = tempDir();
    const pidFile = join(dir.path, "pid");
    await using server = await startServer(["-W", "2", "-p", "cat", "-s", "0", "--pid-file", pidFile]);
    const old = server.proc.pid;
    await waitFor("the pid file", () => existsSync(pidFile) && pidIn(pidFile) === old);
    await using traffic = load(server.target);
    await further(traffic, 20);
    process.kill(old, "SIGUSR2");
    await waitFor("the new master started", () => server.stderr().includes("socket: USR2: started"));
    process.kill(old, "SIGUSR2");
    expect(await server.proc.exited).toBe(0);
    const successor = pidIn(pidFile);
    try {
      // The pid file's path is in every master's command line, not in a worker's: one master only.
      expect(pidsByCommandLine(pidFile).filter(isAlive)).toEqual([successor]);
      await further(traffic, 20);
      await traffic.stop();
      expect(traffic.failures).toEqual([]);
    } finally {
      process.kill(successor, "SIGTERM");
      await waitFor("the new master to end", () => !isAlive(successor));
    }
  }, 30_000);

  test("TERM right after USR2: the old master ends, a new master it started ends with it, and nothing is left", async () => {
    using dir = tempDir();
    const pidFile = join(dir.path, "pid");
    await using server = await startServer(["-W", "2", "-p", "cat", "-s", "0", "--pid-file", pidFile]);
    const old = server.proc.pid;
    await waitFor("2 workers", () => workersOf(old).length === 2);
    const workers = workersOf(old);
    process.kill(old, "SIGUSR2");
    process.kill(old, "SIGTERM");
    await Promise.race([server.proc.exited, Bun.sleep(10_000)]);
    expect(isAlive(old)).toBe(false);
    await waitFor("no master and no worker", () => pidsByCommandLine(pidFile).every((pid) => !isAlive(pid)) && workers.every((pid) => !isAlive(pid)));
    expect(existsSync(pidFile)).toBe(false);
    await expect(exchange(server.target, "anyone?", { ms: 2000 })).rejects.toThrow();
  }, 20_000);
});
