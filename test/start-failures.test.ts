// A pool whose workers cannot start. One that never can (its executable
// out of -u's reach, a program name no file can have) ends with one line,
// and -b's caller returns with it, rather than waiting for ever beside a
// master that retries for ever. One that cannot for a while (a process
// limit) goes on trying, and says so in socket's own lines only: not Bun's
// crash report of each worker that died starting.
import { describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseCommandLine } from "../src/cli/parse.ts";
import { programNameProblem } from "../src/connection/program.ts";
import { takeWorkerConfig, workerConfig } from "../src/pool/protocol.ts";
import { spawnFailure, StartOutput, withoutCrashReport } from "../src/pool/start-failures.ts";
import { SysError } from "../src/system/ffi.ts";
import { exchange, isAlive, launch, pidsByCommandLine, run, signalEach, SOCKET, startServer, tempDir, waitFor } from "./harness.ts";

const isRoot = process.getuid?.() === 0;
const setpriv = Bun.which("setpriv");
const asNobody = [setpriv ?? "setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"];

/**
 * socket's executable where only root may run it (0700, in a 0700
 * directory of root's): started as root, it binds, becomes -u nobody, and then no worker
 * can be executed. Whatever runs from it is ended at the end of the scope
 * (a -b daemon is nobody's child here).
 */
function unreachableCopy(): { dir: string; executable: string } & AsyncDisposable {
  const dir = tempDir(); // mode 0700
  const bin = join(dir.path, "bin");
  mkdirSync(bin, { mode: 0o700 });
  const executable = join(bin, "socket");
  copyFileSync(SOCKET, executable);
  // Root's alone: a worker runs the master's own image (/proc/self/exe), which skips the directories.
  chmodSync(executable, 0o700);
  return {
    dir: dir.path,
    executable,
    [Symbol.asyncDispose]: async () => {
      signalEach(pidsByCommandLine(executable), "SIGKILL");
      await waitFor("what ran from the copy to end", () => pidsByCommandLine(executable).every((pid) => !isAlive(pid)));
      dir[Symbol.dispose]();
    },
  };
}

const GIVE_UP = /^socket: no worker can start: .*\/bin\/socket: Permission denied\n$/;

describe("a pool whose workers can never start", () => {
  test.skipIf(!isRoot)("-b returns status 1 with one line, and leaves no master and no pid file naming one", async () => {
    await using copy = unreachableCopy();
    const pidFile = join(copy.dir, "app.pid");
    const started = Date.now();
    const result = await run(["-b", "-W", "2", "-u", "nobody", "--pid-file", pidFile, "-p", "cat", "-B", "127.0.0.1", "-s", "0"], {
      executable: copy.executable,
      ms: 15000,
    });
    expect(result.stderr).toMatch(GIVE_UP);
    expect(result.status).toBe(1);
    expect(Date.now() - started).toBeLessThan(10000);
    await waitFor("the daemon to end", () => pidsByCommandLine(copy.executable).every((pid) => !isAlive(pid)));
    // Root made it before -u; nobody may not unlink it there: it is left empty, naming no one.
    expect(existsSync(pidFile) ? readFileSync(pidFile, "utf8") : "").toBe("");
  });

  test.skipIf(!isRoot)("without -b the master exits 1 with one line", async () => {
    await using copy = unreachableCopy();
    await using master = launch(["-W", "2", "-u", "nobody", "-p", "cat", "-B", "127.0.0.1", "-s", "0"], { executable: copy.executable });
    const status = await Promise.race([master.exited(), Bun.sleep(10000).then(() => "still running")]);
    expect(status).toBe(1);
    expect(master.stderr()).toMatch(GIVE_UP);
  });

  test("-p naming a program longer than PATH_MAX is refused at once: one line, status 15", async () => {
    const name = "a".repeat(4096);
    for (const command of [name, `/${name} x`]) {
      const result = await run(["-W", "2", "-p", command, "-s", "0"], { ms: 3000 });
      expect(result).toEqual({
        status: 15,
        stdout: "",
        stderr: `socket: -p: the program's name is ${command.split(" ")[0].length} bytes long; a file name is at most 4095 (PATH_MAX)\n`,
      });
    }
  });

  test("a command as long as socket's own argument may be serves: the workers get it whole", async () => {
    // 80 000 bytes, each escaped in the worker's configuration: more than one environment string holds.
    const text = '"\\'.repeat(40000);
    const command = `printf %s '${text}'`;
    await using server = await startServer(["-W", "1", "-p", command, "-s", "0"]);
    expect((await exchange(server.target, "")).data.toString()).toBe(text);
  });
});

describe("a worker that cannot start under a process limit", () => {
  test.skipIf(!isRoot || !setpriv)("the log has socket's line for it, not Bun's crash report", async () => {
    using dir = tempDir();
    chmodSync(dir.path, 0o1777);
    const path = join(dir.path, "s.sock");
    // Room for the master and a few workers, not -W 32: some starts fail at
    // fork (EAGAIN); a worker that ran out of threads would abort, with Bun's report.
    await using server = launch(["-W", "32", "-p", "cat", "-s", path], { wrap: [...asNobody, "bash", "-c", 'ulimit -u 24 && exec "$@"', "bash"] });
    const failed = /^socket: (cannot start a worker|no worker is running): .*trying again in \d+ ms$/m;
    await waitFor("a worker that could not start", () => failed.test(server.stderr()), 15000);
    const text = server.stderr();
    for (const banner of ["Bun has crashed", "oh no", "bun.report", "=".repeat(60), "panic("]) expect(text).not.toContain(banner);
    expect(text.split("\n").filter((line) => line !== "" && !line.startsWith("socket: "))).toEqual([]);
  });
});

describe("the rules, as functions", () => {
  test("programNameProblem: a plain first word of 4096 bytes or more; not one the shell makes", () => {
    expect(programNameProblem("a".repeat(4095))).toBeUndefined();
    expect(programNameProblem(`${"a".repeat(4096)} x`)).toContain("4096 bytes");
    expect(programNameProblem(`'${"a".repeat(5000)}'`)).toBeUndefined(); // quoted: sh decides
    expect(programNameProblem(`X=${"a".repeat(5000)} cat`)).toBeUndefined(); // an assignment
    expect(programNameProblem(`cat ${"a".repeat(100000)}`)).toBeUndefined(); // arguments: bound by socket's own
  });

  test("withoutCrashReport drops Bun's report and empty lines, and keeps socket's lines", () => {
    const report = ["=".repeat(60), "Bun v1.4.5 (a7733435c) Linux x64", "", "panic(main thread): abort() called",
      "oh no: Bun has crashed. This indicates a bug in Bun, not your code.", "", " https://bun.report/1.4.5/l_1a773343Egg", ""].join("\n");
    expect(withoutCrashReport(`socket: one\n${report}\nsocket: two\n`)).toBe("socket: one\nsocket: two\n");
    expect(withoutCrashReport(`${"=".repeat(60)}\nBun v1.4.5\npanic`)).toBe(""); // cut short: all of it dropped
    // A second thread crashing: no rule, its own "oh no" line.
    expect(withoutCrashReport("oh no: multiple threads are crashing\npanic: x\n https://bun.report/1.4.5/x\nsocket: after\n")).toBe("socket: after\n");
  });

  test("a starting worker's stderr: its last line of its own is the reason, Bun's report left out", async () => {
    const said = `socket: worker: malformed configuration from the master (options)\n${"=".repeat(60)}\npanic(main thread): abort() called\n https://bun.report/1.4.5/x\n`;
    const output = new StartOutput(new Blob([said]).stream());
    await output.ended();
    expect(output.settled).toBe(true);
    expect(output.words()).toBe("malformed configuration from the master (options)");
  });

  test("spawnFailure: a shortage is transient, anything else lasting, and the line names the executable", () => {
    const bunError = (code: string, errno: number) => Object.assign(new Error(`${code}: ..., posix_spawn 'socket: worker of 7'`), { code, errno: -errno });
    expect(spawnFailure(bunError("EACCES", 13), "/opt/socket")).toEqual({ why: "/opt/socket: Permission denied", permanent: true });
    expect(spawnFailure(bunError("E2BIG", 7), "/opt/socket")).toEqual({ why: "/opt/socket: Argument list too long", permanent: true });
    expect(spawnFailure(bunError("EAGAIN", 11), "/opt/socket")).toEqual({ why: "/opt/socket: Resource temporarily unavailable", permanent: false });
    expect(spawnFailure(new SysError("socketpair", 24), "/opt/socket")).toEqual({ why: "unable to socketpair: Too many open files", permanent: false });
  });

  test("workerConfig splits a large configuration into environment strings the kernel takes, and takeWorkerConfig joins them", () => {
    const program = `echo ${"\u00e9\"".repeat(60000)}`;
    const parsed = parseCommandLine(["-W", "1", "-p", program, "-s", "0"], false);
    if (!("run" in parsed)) throw new Error("the command line was refused");
    const env: Record<string, string | undefined> = workerConfig(parsed.run, { kind: "unix", path: "/x" }, undefined, true, false);
    const names = Object.keys(env);
    expect(names.length).toBeGreaterThan(1);
    for (const name of names) expect(Buffer.byteLength(`${name}=${env[name]}`)).toBeLessThan(128 * 1024);
    const text = takeWorkerConfig(env);
    expect(JSON.parse(text!).options.program).toBe(program);
    expect(env).toEqual({}); // taken out: programs must not see them
    const stale: Record<string, string | undefined> = { SOCKET_WORKER_1: "}", PATH: "/bin" };
    expect(takeWorkerConfig(stale)).toBeUndefined();
    expect(stale).toEqual({ PATH: "/bin" }); // a master's own environment: its workers do not inherit the part
  });
});
