// -u/-g and the files socket opens as root: the
// supplementary groups are always set, the UNIX socket file belongs to the
// identity socket runs as (so that user can connect, and socket can remove
// it at exit), and --pid-file/--log never follow a symlink or truncate a
// file that is not socket's. Runs for real as root: setpriv and unshare are
// the peers that prove who can connect and what the group database says.
import { describe, expect, test } from "bun:test";
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { exchange, isAlive, run, startServer, tempDir, waitFor, type Server } from "./harness.ts";
import { scgiRequest } from "./gateway-peers.ts";

const root = process.getuid?.() === 0;
if (!root) console.warn("identity.test: not root: -u/-g cannot be tested for real; skipped");

const idOf = (flag: "-u" | "-g", name: string): number => Number(Bun.spawnSync(["id", flag, name]).stdout.toString());

/** A temporary directory like /tmp (sticky, anyone may create): where a dropped-privilege socket can remove its own file. */
function sharedDir(): { path: string } & Disposable {
  const dir = tempDir();
  chmodSync(dir.path, 0o1777);
  return dir;
}

/** Runs `argv` as `user` with that user's primary group and its own supplementary groups (setpriv, util-linux). */
function runAs(user: string, args: string[], stdin: Uint8Array): Promise<{ status: number; stdout: string; stderr: string }> {
  return run(args, { stdin, wrap: ["setpriv", "--reuid", user, "--regid", String(idOf("-g", user)), "--init-groups"] });
}

/** Sends `signal` and waits (bounded) for socket to end. */
async function endWith(server: Server, signal: NodeJS.Signals): Promise<void> {
  server.proc.kill(signal);
  await waitFor(`socket to end on ${signal}`, () => server.proc.exitCode !== null || server.proc.signalCode !== null, 8000);
}

describe.skipIf(!root)("-u/-g: the supplementary groups", () => {
  test("-u 12345 (no passwd entry) without -g: refused with one line, nothing served", async () => {
    const result = await run(["-u", "12345", "-B", "127.0.0.1", "-s", "-p", "id", "0"], { ms: 3000 });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^socket: [^\n]*12345[^\n]*-g[^\n]*\n$/);
  });

  test("-u 12345 -g 12345: the program runs with uid, gid and groups 12345 only (classic and pool)", async () => {
    for (const mode of [["-s", "-l"], ["-W", "2", "-s"]]) {
      await using server = await startServer(["-u", "12345", "-g", "12345", "-B", "127.0.0.1", "-p", "id -u; id -g; id -G", ...mode, "0"]);
      expect((await exchange(server.target, "")).data.toString()).toBe("12345\n12345\n12345\n");
    }
  });

  test("-u nobody: nobody's groups from the group database (initgroups), none of root's", async () => {
    // A group database where nobody is also a member of group 4242, seen by
    // socket alone: /etc/group bind-mounted over in a private mount namespace.
    using dir = tempDir();
    const groupFile = join(dir.path, "group");
    writeFileSync(groupFile, `${readFileSync("/etc/group", "utf8").trimEnd()}\nsocket-test:x:4242:nobody\n`);
    const wrap = ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/group && exec "$@"', groupFile];
    const expected = Bun.spawnSync([...wrap, "id", "-G", "nobody"]).stdout.toString().trim().split(" ").map(Number).sort();
    expect(expected).toContain(4242); // the namespace took
    for (const mode of [["-s", "-l"], ["-W", "2", "-s"]]) {
      await using server = await startServer(["-u", "nobody", "-B", "127.0.0.1", "-p", "id -G", ...mode, "0"], { wrap });
      const groups = (await exchange(server.target, "")).data.toString().trim().split(" ").map(Number).sort();
      expect(groups).toEqual(expected);
      expect(groups).not.toContain(0);
    }
  });
});

describe.skipIf(!root)("-u/-g: the UNIX socket file", () => {
  test("owned by nobody:nogroup with --mode 660, nobody can connect, and the file is gone after TERM and HUP (classic) or ALRM (-W 2)", async () => {
    const [uid, gid] = [idOf("-u", "nobody"), idOf("-g", "nobody")];
    for (const mode of [["-s", "-l", "-f"], ["-W", "2", "-s"]]) {
      // A pool's HUP is a reload (reload.test.ts): ALRM is the signal that ends both at once.
      for (const signal of mode[0] === "-W" ? (["SIGTERM", "SIGALRM"] as const) : (["SIGTERM", "SIGHUP"] as const)) {
        using dir = sharedDir();
        const path = join(dir.path, "app.sock");
        await using server = await startServer(["-u", "nobody", "-g", "nogroup", "--mode", "660", "-p", "id -un", ...mode, path]);
        const stat = lstatSync(path);
        expect([stat.uid, stat.gid, (stat.mode & 0o777).toString(8)]).toEqual([uid, gid, "660"]);
        const asNobody = await runAs("nobody", [path], new Uint8Array(0));
        expect(asNobody).toMatchObject({ status: 0, stdout: "nobody\n" });
        await endWith(server, signal);
        expect(existsSync(path)).toBe(false);
      }
    }
  });

  test("-g alone: the file's group is -g's, its owner stays root", async () => {
    using dir = sharedDir();
    const path = join(dir.path, "app.sock");
    await using server = await startServer(["-g", "nogroup", "--mode", "660", "-s", "-l", "-p", "id -g", path]);
    const stat = lstatSync(path);
    expect([stat.uid, stat.gid]).toEqual([0, idOf("-g", "nobody")]);
    await endWith(server, "SIGTERM");
    expect(existsSync(path)).toBe(false);
  });

  test("the README's recipe: --scgi -W 4 --mode 660 -u www-data on a UNIX socket serves www-data (as nginx's workers), and the file goes at TERM", async () => {
    // README: socket --scgi -W 4 --mode 660 -u www-data -s /run/app.sock -p /srv/app.cgi
    const readme = readFileSync(join(import.meta.dir, "..", "README.md"), "utf8");
    expect(readme).toContain("`socket --scgi -W 4 --mode 660 -u www-data -s /run/app.sock -p /srv/app.cgi`");
    using dir = sharedDir();
    const path = join(dir.path, "app.sock");
    const srv = join(dir.path, "srv");
    mkdirSync(srv, { mode: 0o755 });
    chmodSync(srv, 0o755);
    const cgi = join(srv, "app.cgi");
    writeFileSync(cgi, "#!/bin/sh\nprintf 'Status: 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n'\nid -un\n", { mode: 0o755 });
    await using server = await startServer(["--scgi", "-W", "4", "--mode", "660", "-u", "www-data", "-s", path, "-p", cgi]);
    const request = scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"], ["REQUEST_METHOD", "GET"], ["REQUEST_URI", "/"], ["SERVER_PROTOCOL", "HTTP/1.1"]]);
    const reply = await runAs("www-data", [path], request);
    expect(reply.stderr).toBe("");
    expect(reply.status).toBe(0);
    expect(reply.stdout).toMatch(/^Status: 200 OK\r\n[\s\S]*\r\n\r\nwww-data\n$/);
    await endWith(server, "SIGTERM");
    expect(existsSync(path)).toBe(false);
  });
});

describe.skipIf(!root)("--pid-file and --log never follow a symlink nor truncate a file that is not socket's", () => {
  /** A root-only file and a symlink to it (in a root directory, so fs.protected_symlinks does not step in). */
  function planted(dir: string): { secret: string; link: string } {
    const secret = join(dir, "secret");
    writeFileSync(secret, "root only\n", { mode: 0o600 });
    const link = join(dir, "link");
    symlinkSync(secret, link);
    return { secret, link };
  }

  test("--pid-file on a symlink to a root-only file: refused with one line, the target unchanged", async () => {
    using dir = tempDir();
    const { secret, link } = planted(dir.path);
    const result = await run(["--pid-file", link, "-B", "127.0.0.1", "-s", "-p", "cat", "0"], { ms: 3000 });
    expect(result).toMatchObject({ status: 1, stderr: `socket: --pid-file ${link}: Too many levels of symbolic links\n` });
    expect(readFileSync(secret, "utf8")).toBe("root only\n");
  });

  test("--pid-file on a FIFO or a directory: refused with one line", async () => {
    using dir = tempDir();
    const fifo = join(dir.path, "fifo");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    const subdir = join(dir.path, "dir");
    mkdirSync(subdir);
    for (const path of [fifo, subdir]) {
      const result = await run(["--pid-file", path, "-B", "127.0.0.1", "-s", "-p", "cat", "0"], { ms: 3000 });
      expect(result).toMatchObject({ status: 1, stderr: `socket: --pid-file ${path}: not a regular file\n` });
    }
  });

  test("--pid-file on another user's file: refused, unchanged; a stale pid file of socket's own user is reused", async () => {
    using dir = tempDir();
    const theirs = join(dir.path, "theirs.pid");
    writeFileSync(theirs, "not yours\n");
    chownSync(theirs, idOf("-u", "nobody"), idOf("-g", "nobody"));
    const refused = await run(["--pid-file", theirs, "-B", "127.0.0.1", "-s", "-p", "cat", "0"], { ms: 3000 });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(new RegExp(`^socket: --pid-file ${theirs}: [^\\n]+\\n$`));
    expect(readFileSync(theirs, "utf8")).toBe("not yours\n");

    const stale = join(dir.path, "stale.pid");
    writeFileSync(stale, "999999999\n");
    await using server = await startServer(["--pid-file", stale, "-B", "127.0.0.1", "-s", "-l", "-p", "cat", "0"]);
    await waitFor("the pid in the file", () => readFileSync(stale, "utf8") === `${server.proc.pid}\n`);
  });

  test("--log on a symlink to a root-only file: refused with one line, the target unchanged", async () => {
    using dir = tempDir();
    const { secret, link } = planted(dir.path);
    const pidFile = join(dir.path, "daemon.pid");
    const result = await run(["-b", "-v", "--log", link, "--pid-file", pidFile, "-B", "127.0.0.1", "-s", "-l", "-p", "cat", "0"], { ms: 3000 });
    try {
      expect(result).toMatchObject({ status: 1, stderr: `socket: --log ${link}: Too many levels of symbolic links\n` });
      expect(readFileSync(secret, "utf8")).toBe("root only\n");
    } finally {
      // Before the fix the daemon started: end it.
      if (existsSync(pidFile)) {
        const pid = Number(readFileSync(pidFile, "utf8"));
        if (pid > 0 && isAlive(pid)) process.kill(pid, "SIGTERM");
        await waitFor("the daemon to end", () => !(pid > 0 && isAlive(pid)));
      }
    }
  });
});
