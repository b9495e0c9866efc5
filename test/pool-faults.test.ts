// Faults that used to take a pool (or its programs) down, each tried as it
// happens in production: a full --log disk, a process limit, a datagram
// socket passed by a service manager, signals other than TERM, and TERM
// while clients wait in the accept queue.
import { describe, expect, test } from "bun:test";
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import type { Socket } from "bun";
import { exchange, isAlive, launch, startServer, tempDir, waitFor, workersOf } from "./harness.ts";

const works = (argv: string[]) => Bun.spawnSync(argv, { stdout: "ignore", stderr: "ignore" }).exitCode === 0;
const isRoot = process.getuid?.() === 0;

/** CPU ticks (utime + stime, 1/100 s) a process has used. */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** Opens `n` connections, each sending its number and a newline, and resolves once all are connected. */
async function clients(target: number, n: number): Promise<Promise<string>[]> {
  const replies: Promise<string>[] = [];
  const connected: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    let onOpen!: () => void;
    connected.push(new Promise<void>((resolve) => (onOpen = resolve)));
    replies.push(
      new Promise<string>((resolve) => {
        let text = "";
        void Bun.connect({
          hostname: "127.0.0.1",
          port: target,
          socket: {
            open(s: Socket<undefined>) {
              s.write(`${i}\n`);
              onOpen();
            },
            data: (_s, d) => void (text += d.toString()),
            close: () => resolve(text),
            error: () => resolve(`${text}<error>`),
          },
        }).catch(() => resolve("<refused>"));
      }),
    );
  }
  await Promise.all(connected);
  return replies;
}

describe("TERM drains what the kernel has already accepted", () => {
  const program = `read l; sleep 0.05; echo "got $l"`;

  test("-W 2 --grace 10: 40 clients already connected are all served", async () => {
    await using server = await startServer(["-W", "2", "--grace", "10", "-p", program, "-s", "0"]);
    const replies = await clients(server.target as number, 40);
    server.proc.kill("SIGTERM");
    const texts = await Promise.all(replies);
    expect(texts).toEqual(texts.map((_, i) => `got ${i}\n`));
    expect(await server.proc.exited).toBe(241);
  });

  test("-l --grace 10 (one at a time): the connections waiting their turn are served", async () => {
    await using server = await startServer(["-l", "--grace", "10", "-p", program, "-s", "0"]);
    const replies = await clients(server.target as number, 10);
    await waitFor("the first connection to be taken", () => server.stderr().includes("connection from"));
    server.proc.kill("SIGTERM");
    const texts = await Promise.all(replies);
    expect(texts).toEqual(texts.map((_, i) => `got ${i}\n`));
    expect(await server.proc.exited).toBe(241);
  });
});

describe("every signal that ends a pool master ends what it started", () => {
  // HUP, USR1, USR2, TTIN and TTOU are a pool's own (reload, reopen, upgrade, resize: reload.test.ts).
  for (const [signal, status] of [["SIGALRM", 242], ["SIGVTALRM", 230]] as const) {
    test(`${signal}: the running program is ended, not left to parent 1`, async () => {
      await using server = await startServer(["-W", "1", "--grace", "0.2", "-p", "echo $$; exec sleep 30", "-s", "0"]);
      let pid = 0;
      const connection = Bun.connect({
        hostname: "127.0.0.1",
        port: server.target as number,
        socket: { data: (_s, d) => void (pid ||= Number.parseInt(d.toString(), 10)) },
      });
      await waitFor("the program's pid", () => pid > 0);
      server.proc.kill(signal);
      expect(await server.proc.exited).toBe(status);
      await waitFor(`program ${pid} to be ended`, () => !isAlive(pid), 3000);
      (await connection).end();
    });
  }
});

const activate = Bun.which("systemd-socket-activate");
const socat = Bun.which("socat");
describe("a socket passed by the service manager", () => {
  test.skipIf(!activate || !socat)("a datagram socket is refused at start with one line and status 15", async () => {
    // A UNIX datagram socket: no port to choose, and as much not a stream as UDP.
    using dir = tempDir();
    const path = join(dir.path, "dgram");
    await using server = launch(["-W", "2", "-p", "cat", "-s"], { wrap: [activate!, "--datagram", "-l", path] });
    await waitFor("the activator to listen", () => server.stderr().includes("Listening on"));
    // The activator starts socket at the first datagram, as systemd does.
    expect(Bun.spawnSync([socat!, "-u", "-", `UNIX-SENDTO:${path}`], { stdin: Buffer.from("x") }).exitCode).toBe(0);
    const status = await Promise.race([server.exited(), Bun.sleep(5000).then(() => "timeout")]);
    expect(status).toBe(15);
    const ours = server.stderr().split("\n").filter((l) => l.startsWith("socket"));
    expect(ours).toEqual(["socket: descriptor 3 from the service manager is not a listening stream socket (ListenStream=, Accept=no)"]);
  });
});

const setpriv = Bun.which("setpriv");
// A uid and gid no account has, so no other process counts against its limit.
const asLoneUser = [setpriv ?? "setpriv", "--reuid", "64321", "--regid", "64321", "--clear-groups"];
describe("a process limit (ulimit -u)", () => {
  test.skipIf(!isRoot || !setpriv)("the master lives on, and says it cannot start workers at the backoff's pace", async () => {
    // A UNIX socket (the limit is about processes, not TCP), in a directory where nobody may create it.
    using dir = tempDir();
    chmodSync(dir.path, 0o1777);
    const path = join(dir.path, "s.sock");
    // As a user of its own (root is not bound by RLIMIT_NPROC, and the limit
    // counts every process of the user: nobody's web servers from other tests
    // would take slots), with room for the master's threads and a few
    // workers but not -W 32.
    await using server = launch(["-W", "32", "-p", "cat", "-s", path], { wrap: [...asLoneUser, "bash", "-c", 'ulimit -u 24 && exec "$@"', "bash"] });
    await waitFor("a worker to serve", async () => {
      const reply = await exchange(path, "ping\n", { ms: 1000 }).catch(() => undefined);
      return reply?.data.toString() === "ping\n";
    });
    // Load for three seconds: every connection makes a busy worker say so.
    const end = Date.now() + 3000;
    let served = 0;
    while (Date.now() < end || (served === 0 && Date.now() < end + 7000)) {
      const reply = await exchange(path, "x\n", { ms: 2000 }).catch(() => undefined);
      if (reply?.data.toString() === "x\n") served++;
    }
    // Served on: how many find a slot for their `cat` varies from run to run (tens to thousands), since the
    // master gives every slot a program frees to a new worker's threads, but never none.
    expect(served).toBeGreaterThan(0);
    expect(server.proc.exitCode).toBeNull(); // the master did not abort (134)
    const text = server.stderr();
    const retries = text.match(/cannot start a worker: .*trying again in \d+ ms/g) ?? [];
    expect(retries.length).toBeGreaterThan(0);
    // The backoff doubles from 100 ms; a worker that starts in a slot a
    // finished `cat` freed ends a run of failures and the doubling starts
    // again. Either way a few lines a second at most, never a retry loop.
    expect(retries.length).toBeLessThan(30);
    expect(text).not.toMatch(/Args: "\/.*-W" "8"/); // no crash report of the master's
  });
  // The master executes itself with the options only where a limit can be
  // reached: it costs a whole start of the executable at every launch.
  // /proc/PID/environ is the environment the process was executed with.
  const executedWith = (pid: number) => readFileSync(`/proc/${pid}/environ`, "utf8").includes("BUN_JSC_useConcurrentJIT=0");
  test.skipIf(!isRoot || !setpriv)("the master executes itself again under a process limit, and not as root with none", async () => {
    using dir = tempDir();
    chmodSync(dir.path, 0o1777);
    const limited = join(dir.path, "limited.sock");
    await using bound = launch(["-W", "1", "-p", "cat", "-s", limited], { wrap: [...asLoneUser, "bash", "-c", 'ulimit -u 200 && exec "$@"', "bash"] });
    const free = join(dir.path, "free.sock");
    await using root = launch(["-W", "1", "-p", "cat", "-s", free]);
    for (const path of [limited, free]) {
      await waitFor(`${path} to serve`, async () => (await exchange(path, "ping\n", { ms: 1000 }).catch(() => undefined))?.data.toString() === "ping\n");
    }
    expect(executedWith(bound.proc.pid)).toBe(true);
    expect(executedWith(root.proc.pid)).toBe(false);
    // Its workers are started with the options either way (the limit may be the machine's).
    for (const pid of workersOf(root.proc.pid)) expect(executedWith(pid)).toBe(true);
  });
});

const canMount = isRoot && works(["mount", "--version"]);
describe("a full disk under the log", () => {
  test.skipIf(!canMount)("failed log writes are dropped: the master neither spins nor stops replacing workers, and says what it dropped", async () => {
    using dir = tempDir();
    const disk = join(dir.path, "disk");
    mkdirSync(disk);
    expect(works(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", disk])).toBe(true);
    const log = join(disk, "log");
    const fd = openSync(log, "a");
    const filler = join(disk, "filler");
    try {
      // stderr is the log on the small disk, not a pipe: its writes are what fail.
      await using master = await startServer(["-W", "2", "-p", "cat", "-s", "0"], { stderrFile: log });
      const port = master.target;
      await waitFor("the pool to start", () => master.stderr().includes("status: 0/2"));
      // Fill the disk to the last byte: the filler takes every free page, then the log's own last page is filled.
      const fill = openSync(filler, "w");
      for (const [target, size] of [[fill, 4096], [fd, 1]] as const) {
        const block = Buffer.alloc(size, 10);
        try {
          for (;;) writeSync(target, block);
        } catch {
          // ENOSPC: full
        }
      }
      closeSync(fill);
      for (let i = 0; i < 20; i++) expect((await exchange(port, `${i}\n`)).data.toString()).toBe(`${i}\n`);
      const before = cpuTicks(master.proc.pid);
      const started = Date.now();
      const [worker] = workersOf(master.proc.pid);
      process.kill(worker, "SIGKILL");
      await waitFor("a new worker in the dead one's place", () => {
        const now = workersOf(master.proc.pid);
        return now.length === 2 && !now.includes(worker);
      });
      expect((await exchange(port, "after\n")).data.toString()).toBe("after\n");
      await Bun.sleep(Math.max(0, 1000 - (Date.now() - started))); // a second of the master's life, measured
      expect(cpuTicks(master.proc.pid) - before).toBeLessThan(20); // under 20 % of a core (it spun at 100 %)
      rmSync(filler);
      expect((await exchange(port, "freed\n")).data.toString()).toBe("freed\n");
      await waitFor("the dropped lines to be counted", () => /socket: \d+ lines could not be written to stderr and were dropped/.test(master.stderr()));
    } finally {
      closeSync(fd);
      works(["umount", "-l", disk]);
      if (existsSync(disk)) rmSync(disk, { recursive: true, force: true });
    }
  });
});
