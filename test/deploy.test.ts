// Where operators run socket: PID 1 in a PID namespace and
// subreaper, shutdown that ends everything socket started, systemd socket
// activation, sd_notify readiness, a -b daemon that releases its caller,
// --pid-file and --log, worker titles. Real peers: unshare, systemd's
// systemd-socket-activate, socat as the NOTIFY_SOCKET receiver.
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Socket } from "bun";
import { children, childrenOf, cmdline, descendantsOf, zombiesOf, notifyReceiver, exchange, isAlive, launch, run, SOCKET, startServer, tempDir, waitFor, workersOf, type Running, type Target } from "./harness.ts";

const works = (argv: string[]) => {
  try {
    return Bun.spawnSync(argv, { stdio: ["ignore", "ignore", "ignore"] }).exitCode === 0;
  } catch {
    return false;
  }
};
const canUnshare = works(["unshare", "--pid", "--fork", "--mount-proc", "true"]);
const hasActivate = works(["systemd-socket-activate", "--help"]);
const hasSocat = works(["socat", "-V"]);
if (!canUnshare) console.warn("deploy.test: unshare --pid --fork --mount-proc fails here (needs root or user namespaces): PID 1 tests skipped");
if (!hasActivate) console.warn("deploy.test: systemd-socket-activate missing (Debian package systemd): activation tests skipped");
if (!hasSocat) console.warn("deploy.test: socat missing: NOTIFY_SOCKET tests skipped");

/** The process started through a wrapper (unshare --fork starts socket as its child). */
async function wrapped(wrapper: number): Promise<number> {
  let pid = 0;
  await waitFor("socket under its wrapper", () => {
    pid = childrenOf(wrapper).find((p) => cmdline(p).startsWith(SOCKET)) ?? 0;
    return pid !== 0;
  });
  return pid;
}

/** A connection held open until closed: a program that outlives the master's TERM. */
async function hold(target: Target): Promise<Socket<undefined>> {
  const handlers = { data() {}, error() {} };
  return typeof target === "number"
    ? Bun.connect({ hostname: "127.0.0.1", port: target, socket: handlers })
    : Bun.connect({ unix: target, socket: handlers });
}

/** `count` connections, `lanes` at a time; what each that did not get "hi" got instead. */
async function connections(target: Target, count: number, lanes = 16): Promise<string[]> {
  let next = 0;
  const wrong: string[] = [];
  const lane = async () => {
    while (next++ < count) {
      try {
        const reply = await exchange(target, "", { ms: 10_000 });
        if (reply.data.toString() !== "hi\n") wrong.push(`${reply.ended}: ${JSON.stringify(reply.data.toString())}`);
      } catch (e) {
        wrong.push(String(e));
      }
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
  return wrong;
}

/**
 * Every process below `pid`, zombies included (harness's descendantsOf skips
 * them, and with them what a not yet reaped program left running).
 */
const familyOf = (pid: number): number[] => children(pid).flatMap((c) => [c.pid, ...familyOf(c.pid)]);

const ORPHAN = "sleep 0.2 & echo hi";
const MODES = { pool: ["-W", "4"], "-slf": ["-l", "-f"] } as const;

describe("PID 1 in a PID namespace", () => {
  for (const [mode, flags] of Object.entries(MODES)) {
    test.skipIf(!canUnshare)(`${mode}: 500 orphans leave no zombie; TERM ends everything with 241`, async () => {
      const wrap = ["unshare", "--pid", "--fork", "--mount-proc"];
      await using server = await startServer(["-p", ORPHAN, ...flags, "-s", "0"], { wrap });
      const pid = await wrapped(server.proc.pid);
      expect(readFileSync(`/proc/${pid}/status`, "utf8")).toMatch(/^NSpid:\s+\d+\s+1$/m); // it is PID 1 there
      expect(await connections(server.target, 500, 64)).toEqual([]);
      // Every orphan ends 0.2 s after its connection: then none may be left a zombie.
      // Nothing left but the pool's workers: an orphan still between fork and exec is not yet "sleep".
      await waitFor("every orphan reaped", () => familyOf(pid).every((p) => workersOf(pid).includes(p)), 5000);
      expect(zombiesOf(pid)).toBe(0);
      // A connection still running, then TERM to PID 1: drained, then everything ends.
      const conn = await hold(server.target);
      const family = [pid, ...descendantsOf(pid)];
      process.kill(pid, "SIGTERM");
      expect(await Promise.race([server.proc.exited, Bun.sleep(8000).then(() => "still running")])).toBe(241);
      expect(server.stderr()).toContain("Termination signal occured, exiting");
      await waitFor("everything in the namespace to end", () => family.every((p) => !isAlive(p)), 3000);
      conn.end();
    }, 60_000);
  }
});

describe("PID 1: INT", () => {
  for (const [mode, flags] of Object.entries(MODES)) {
    test.skipIf(!canUnshare)(`${mode}: INT to PID 1 drains and exits 254 (a PID 1 gets no default actions)`, async () => {
      await using server = await startServer(["-p", "cat", ...flags, "-s", "0"], { wrap: ["unshare", "--pid", "--fork", "--mount-proc"] });
      const pid = await wrapped(server.proc.pid);
      expect((await exchange(server.target, "before")).data.toString()).toBe("before");
      process.kill(pid, "SIGINT");
      expect(await Promise.race([server.proc.exited, Bun.sleep(8000).then(() => "still running")])).toBe(254);
      expect(server.stderr()).toContain("Interrupt occured, exiting");
    });
  }
});

test.skipIf(!canUnshare)("pool: USR2 to PID 1 is refused in one line (its exit would end the container); the pool serves on", async () => {
  await using server = await startServer(["-p", "cat", "-W", "2", "-s", "0"], { wrap: ["unshare", "--pid", "--fork", "--mount-proc"] });
  const pid = await wrapped(server.proc.pid);
  process.kill(pid, "SIGUSR2");
  await waitFor("the refusal", () => server.stderr().includes("USR2: as PID 1 this master cannot hand over"));
  expect((await exchange(server.target, "after")).data.toString()).toBe("after");
  expect(isAlive(pid)).toBe(true);
  expect(server.stderr()).not.toContain("the new master");
});

describe("subreaper (not PID 1)", () => {
  for (const [mode, flags] of Object.entries(MODES)) {
    test(`${mode}: 500 orphans leave no zombie; TERM ends everything with 241`, async () => {
      await using server = await startServer(["-p", ORPHAN, ...flags, "--grace", "0", "-s", "0"]);
      const pid = server.proc.pid;
      expect(await connections(server.target, 500, 64)).toEqual([]);
      // Nothing left but the pool's workers: an orphan still between fork and exec is not yet "sleep".
      await waitFor("every orphan reaped", () => familyOf(pid).every((p) => workersOf(pid).includes(p)), 5000);
      expect(zombiesOf(pid)).toBe(0);
      const conn = await hold(server.target);
      await waitFor("the orphan of the held connection", () => descendantsOf(pid).some((p) => cmdline(p).startsWith("sleep")));
      const family = descendantsOf(pid);
      process.kill(pid, "SIGTERM");
      expect(await Promise.race([server.proc.exited, Bun.sleep(8000).then(() => "still running")])).toBe(241);
      await waitFor("everything it started to end", () => family.filter(isAlive).length === 0, 3000);
      conn.end();
    }, 60_000);
  }
});

describe("shutdown ends everything socket started", () => {
  for (const [mode, flags] of Object.entries(MODES)) {
    test(`${mode}: with --grace 1, a program that ignores TERM is gone 3 s after the master's TERM`, async () => {
      await using server = await startServer(["-p", 'trap "" TERM; sleep 20', ...flags, "--grace", "1", "-s", "0"]);
      const pid = server.proc.pid;
      const conn = await hold(server.target);
      let sleeper = 0;
      await waitFor("the program", () => {
        sleeper = descendantsOf(pid).find((p) => cmdline(p).startsWith("sleep")) ?? 0;
        return sleeper !== 0;
      });
      const family = descendantsOf(pid);
      process.kill(pid, "SIGTERM");
      // Within 3 s of the TERM: 1 s of grace, then TERM, then KILL 1 s later.
      await waitFor("everything it started, the program that ignores TERM included, to end", () => family.every((p) => !isAlive(p)), 3000);
      expect(isAlive(sleeper)).toBe(false);
      expect(await server.proc.exited).toBe(241);
      // -v says how many were cut short: sh and its sleep.
      expect(server.stderr()).toMatch(/2 processes cut short \(TERM, then KILL after 1 s\)/);
      conn.end();
    }, 20_000);
  }
});

/**
 * socket -v ARGS under systemd-socket-activate (Accept=no), which binds `where`
 * and execs socket at the first connection, as systemd does. The activator
 * cannot bind port 0 and say which it got: for TCP it is given a port the
 * kernel had free, and another if some process took that one meanwhile.
 */
async function activated(dir: string, family: "tcp" | "unix", args: string[]): Promise<{ server: Running; where: string; target: Target }> {
  for (let attempt = 1; ; attempt++) {
    let port = 0;
    if (family === "tcp") {
      const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      port = probe.port;
      probe.stop(true);
    }
    const where = family === "tcp" ? `127.0.0.1:${port}` : join(dir, "s");
    const server = launch(["-v", ...args], { wrap: ["systemd-socket-activate", "-l", where] });
    try {
      await waitFor("the activator to listen", () => server.proc.exitCode !== null || server.stderr().includes("Listening on"));
    } catch (e) {
      await server.kill();
      throw e;
    }
    if (server.proc.exitCode === null) return { server, where, target: family === "tcp" ? port : where };
    await server.exited();
    if (attempt === 5 || !server.stderr().includes("Address already in use")) throw new Error(`systemd-socket-activate failed: ${server.stderr()}`);
  }
}

describe("systemd socket activation", () => {
  const cases = [
    ["classic TCP", ["-l", "-f"], "tcp"],
    ["pool TCP", ["-W", "2"], "tcp"],
    ["pool UNIX", ["-W", "2"], "unix"],
    ["classic UNIX", ["-l", "-f"], "unix"],
  ] as const;
  for (const [name, flags, family] of cases) {
    test.skipIf(!hasActivate)(`${name}: -s alone serves the passed socket; programs do not see LISTEN_*`, async () => {
      using dir = tempDir();
      const program = 'echo "fds=${LISTEN_FDS:-unset} pid=${LISTEN_PID:-unset} $PROTO"; cat';
      const { server, where, target } = await activated(dir.path, family, ["-p", program, ...flags, "-s"]);
      await using _server = server;
      const replies = await Promise.all([1, 2, 3].map((i) => exchange(target, `n${i}\n`)));
      const proto = family === "tcp" ? "TCP" : "UNIX";
      replies.forEach((r, i) => expect(r.data.toString()).toBe(`fds=unset pid=unset ${proto}\nn${i + 1}\n`));
      // -v names the passed socket's address; the pid is socket's (the activator execs it).
      expect(server.stderr()).toContain(family === "tcp" ? `inet: listening on port ${target}` : `unix: bound to ${where}`);
      expect(readFileSync(`/proc/${server.proc.pid}/cmdline`, "utf8").startsWith(SOCKET)).toBe(true);
      server.proc.kill("SIGTERM");
      expect(await server.proc.exited).toBe(241);
      // The path is the service manager's: socket leaves it there when it ends.
      if (family === "unix") expect(existsSync(where)).toBe(true);
    });
  }

  test("-s alone without a passed socket is the usage error", async () => {
    const result = await run(["-s", "-p", "cat"], { env: { LISTEN_PID: "1", LISTEN_FDS: "1" } });
    expect(result.status).toBe(15);
    expect(result.stderr).toContain("-s needs a port or /path, or a listening socket passed by systemd");
    expect(result.stderr).toMatch(/^Usage: socket /m);
  });
});

describe("readiness (NOTIFY_SOCKET)", () => {
  for (const abstract of [false, true]) {
    test.skipIf(!hasSocat)(`READY=1 once the workers wait, STOPPING=1 at TERM (${abstract ? "abstract name" : "path"})`, async () => {
      using dir = tempDir();
      const address = abstract ? `@socket-test-${process.pid}-${Date.now()}` : join(dir.path, "notify");
      await using receiver = notifyReceiver(address);
      // An abstract name has no file: the kernel's table of UNIX sockets lists it once socat has bound it.
      if (abstract) await waitFor("the receiver", () => readFileSync("/proc/net/unix", "utf8").includes(` ${address}\n`));
      else await waitFor("the receiver", () => existsSync(address));
      await using server = await startServer(["-p", 'echo "${NOTIFY_SOCKET:-unset}"', "-W", "2", "-s", "0"], { env: { NOTIFY_SOCKET: address } });
      await waitFor("READY=1", () => receiver.text() === "READY=1");
      // Ready means both workers said they wait in accept: -v's status line comes then, not at spawn.
      await waitFor("the status line", () => server.stderr().includes("status: 0/2"));
      expect(server.stderr().indexOf("status:")).toBeGreaterThan(server.stderr().lastIndexOf("started"));
      expect(workersOf(server.proc.pid).length).toBe(2);
      // Programs do not see NOTIFY_SOCKET (they would notify in socket's name).
      expect((await exchange(server.target, "")).data.toString()).toBe("unset\n");
      expect(receiver.text()).toBe("READY=1");
      server.proc.kill("SIGTERM");
      await waitFor("STOPPING=1", () => receiver.text() === "READY=1STOPPING=1");
      expect(await server.proc.exited).toBe(241);
    });
  }

  test.skipIf(!hasSocat)("classic server: READY=1 once bound", async () => {
    using dir = tempDir();
    const address = join(dir.path, "notify");
    await using receiver = notifyReceiver(address);
    await waitFor("the receiver", () => existsSync(address));
    await using server = await startServer(["-l", "-f", "-p", "cat", "-s", "0"], { env: { NOTIFY_SOCKET: address } });
    await waitFor("READY=1", () => receiver.text() === "READY=1");
    expect((await exchange(server.target, "ok")).data.toString()).toBe("ok");
    server.proc.kill("SIGTERM");
    await waitFor("STOPPING=1", () => receiver.text() === "READY=1STOPPING=1");
  });
});

/** Ends a daemon found by its pid file and waits until it and its pid file are gone. */
async function stopDaemon(pidFile: string): Promise<void> {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, "utf8"));
  const family = [pid, ...descendantsOf(pid)];
  process.kill(pid, "SIGTERM");
  await waitFor("the daemon to end", () => family.every((p) => !isAlive(p)), 5000);
}

describe("-b: a daemon that behaves", () => {
  for (const [mode, flags] of Object.entries({ pool: ["-W", "2"], "-slf": ["-l", "-f"] })) {
    test(`${mode}: \`socket -b ... | cat\` returns, the pid file names the daemon, which serves, then TERM removes it`, async () => {
      using dir = tempDir();
      const path = join(dir.path, "d.sock");
      const pidFile = join(dir.path, "socket.pid");
      const log = join(dir.path, "socket.log");
      // A pipe on stdout and stderr: the caller must not wait for the daemon to close them.
      const caller = launch(["-b", "-v", "--log", log, "--pid-file", pidFile, "-p", "cat", ...flags, "-s", path], {
        wrap: ["sh", "-c", '"$@" 2>&1 | cat', "sh"],
        cwd: dir.path,
      });
      try {
        // The bound: socket(1)'s -b hung here forever; the wait is the pool's start.
        expect(await Promise.race([caller.exited(), Bun.sleep(2000).then(() => "still waiting")])).toBe(0);
        expect(caller.stdout()).toBe("");
        // Released only once it serves: the pid file is there, and the socket answers.
        const pid = Number(readFileSync(pidFile, "utf8"));
        expect(readFileSync(`/proc/${pid}/cmdline`, "utf8")).toContain(path);
        expect(readFileSync(`/proc/${pid}/stat`, "utf8").split(" ")[5]).toBe(String(pid)); // its own session
        expect((await exchange(path, "daemon")).data.toString()).toBe("daemon");
        expect(readFileSync(log, "utf8")).toContain(`unix: bound to ${path}`);
        process.kill(pid, "SIGTERM");
        await waitFor("the pid file to go", () => !existsSync(pidFile));
        await waitFor("the daemon to end", () => !isAlive(pid));
        expect(readFileSync(log, "utf8")).toContain("Termination signal occured, exiting");
      } finally {
        await caller.kill();
        await stopDaemon(pidFile);
      }
    });
  }

  for (const [mode, flags] of Object.entries({ pool: ["-p", "cat", "-W", "2"], classic: ["-l"] })) {
    test(`${mode}: a bind error under -b reaches the caller's stderr with socket(1)'s status`, async () => {
      using dir = tempDir();
      const taken = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      const pidFile = join(dir.path, "socket.pid");
      try {
        const result = await run(["-b", "--pid-file", pidFile, ...flags, "-B", "127.0.0.1", "-s", String(taken.port)]);
        expect(result).toMatchObject({ status: 1, stdout: "", stderr: "socket: server socket: Address already in use\n" });
        expect(existsSync(pidFile)).toBe(false);
      } finally {
        taken.stop(true);
        await stopDaemon(pidFile);
      }
    });
  }

  test("--log needs -b; an unwritable --log is reported by the caller", async () => {
    expect(await run(["--log", "/tmp/x", "-s", "-p", "cat", "0"])).toMatchObject({ status: 15 });
    const result = await run(["-b", "--log", "/nonexistent/dir/log", "-s", "-p", "cat", "0"]);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe("socket: --log /nonexistent/dir/log: No such file or directory\n");
  });

  test("--pid-file without -b: written once serving, removed at exit", async () => {
    using dir = tempDir();
    const pidFile = join(dir.path, "p");
    await using server = await startServer(["--pid-file", pidFile, "-p", "cat", "-W", "2", "-s", "0"]);
    // Created at the bind, filled once the workers wait.
    await waitFor("the pid file", () => existsSync(pidFile) && readFileSync(pidFile, "utf8") !== "");
    expect(readFileSync(pidFile, "utf8")).toBe(`${server.proc.pid}\n`);
    server.proc.kill("SIGINT");
    expect(await server.proc.exited).toBe(254);
    expect(existsSync(pidFile)).toBe(false);
  });
});

describe("--pid-file with -u", () => {
  const root = process.getuid?.() === 0;
  if (!root) console.warn("deploy.test: not root: the --pid-file with -u test is skipped");
  test.skipIf(!root)("opened before privileges drop: the pid file lives in a root-only directory, and is emptied at the end", async () => {
    using dir = tempDir(); // root's, mode 0700: nobody cannot write there
    const pidFile = join(dir.path, "app.pid");
    const result = await run(["-b", "--pid-file", pidFile, "-u", "nobody", "-p", "cat", "-W", "2", "-B", "127.0.0.1", "-s", "0"]);
    expect(result).toMatchObject({ status: 0, stderr: "" });
    const pid = Number(readFileSync(pidFile, "utf8"));
    try {
      expect(readFileSync(`/proc/${pid}/status`, "utf8")).toMatch(/^Uid:\s+65534\s/m);
    } finally {
      process.kill(pid, "SIGTERM");
    }
    await waitFor("the daemon to end", () => !isAlive(pid));
    expect(readFileSync(pidFile, "utf8")).toBe(""); // nobody may not unlink it; it names no one
  });
});

describe("worker titles", () => {
  test("ps names the pool a worker belongs to, and it still works as a worker", async () => {
    using dir = tempDir();
    const path = join(dir.path, "titled.sock");
    await using tcp = await startServer(["-p", "cat", "-W", "2", "-s", "0"]);
    await using unix = await startServer(["-p", "cat", "-W", "1", "-s", path]);
    await waitFor("the workers", () => workersOf(tcp.proc.pid).length === 2 && workersOf(unix.proc.pid).length === 1);
    for (const pid of workersOf(tcp.proc.pid)) {
      expect(readFileSync(`/proc/${pid}/cmdline`, "utf8")).toBe(`socket: worker of ${tcp.target}\0--pool-worker\0`);
    }
    const [worker] = workersOf(unix.proc.pid);
    const ps = Bun.spawnSync(["ps", "-o", "args=", "-p", String(worker)]).stdout.toString().trim();
    expect(ps).toBe(`socket: worker of ${path} --pool-worker`);
    expect((await exchange(tcp.target, "titled")).data.toString()).toBe("titled");
    expect((await exchange(path, "titled")).data.toString()).toBe("titled");
  });
});
