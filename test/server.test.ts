// Classic server modes (-s, -l, -f, -p, -v, -b), TCP and UNIX, against dist/socket.
import { describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { exchange, isAlive, launch, pidsByCommandLine, run, signalEach, SOCKET, startServer, tempDir, TIMED_PROGRAM, timeline, type Target, waitFor } from "./harness.ts";

const kinds = [
  { name: "TCP", listen: (_dir: string, _name = "s") => "0" },
  { name: "UNIX", listen: (dir: string, name = "s") => join(dir, `${name}.sock`) },
];

describe.each(kinds)("server on $name", ({ listen }) => {
  for (const flags of [["-l"], ["-l", "-f"]]) {
    test(`${flags.join(" ")} -p cat answers a client that half-closes (socket 1.1 lost it)`, async () => {
      using dir = tempDir();
      await using server = await startServer(["-s", ...flags, "-p", "cat", listen(dir.path)]);
      for (const payload of ["hi", "x".repeat(100_000)]) {
        const reply = await exchange(server.target, payload);
        expect(reply.data.toString()).toBe(payload);
        expect(reply.ended).toBe("closed");
      }
    });
  }

  test("a program that answers late is still heard after the peer's EOF", async () => {
    using dir = tempDir();
    await using server = await startServer(["-s", "-l", "-f", "-p", "sleep 0.3; echo late", listen(dir.path)]);
    const reply = await exchange(server.target, "ignored");
    expect(reply.data.toString()).toBe("late\n");
  });

  test("-f serves connections at the same time", async () => {
    using dir = tempDir();
    await using server = await startServer(["-s", "-l", "-f", "-p", TIMED_PROGRAM, listen(dir.path)]);
    const times = (await Promise.all(Array.from({ length: 4 }, () => exchange(server.target, "")))).map(timeline);
    // Every one started before any one ended.
    expect(Math.max(...times.map((t) => t.start))).toBeLessThan(Math.min(...times.map((t) => t.end)));
  });

  test("-l without -f serves one connection at a time", async () => {
    using dir = tempDir();
    await using server = await startServer(["-s", "-l", "-p", TIMED_PROGRAM, listen(dir.path)]);
    const times = (await Promise.all(Array.from({ length: 3 }, () => exchange(server.target, "")))).map(timeline);
    times.sort((x, y) => x.start - y.start);
    expect(times[1].start).toBeGreaterThanOrEqual(times[0].end);
    expect(times[2].start).toBeGreaterThanOrEqual(times[1].end);
  });

  test("without -l the server serves one connection and exits 0", async () => {
    using dir = tempDir();
    await using server = await startServer(["-s", "-p", "cat", listen(dir.path)]);
    expect((await exchange(server.target, "once")).data.toString()).toBe("once");
    expect(await server.proc.exited).toBe(0);
  });

  test("the program's stderr is the connection too, and it gets the UCSPI environment", async () => {
    using dir = tempDir();
    const script = 'echo "$PROTO" >&2; echo "${TCPREMOTEIP:-$UNIXREMOTEPID}" "${TCPLOCALPORT:-$UNIXLOCALPATH}"';
    await using server = await startServer(["-s", "-l", "-f", "-p", script, listen(dir.path)]);
    const [proto, ends] = (await exchange(server.target, "")).data.toString().trim().split("\n");
    if (typeof server.target === "number") {
      expect(proto).toBe("TCP");
      expect(ends).toBe(`127.0.0.1 ${server.target}`);
    } else {
      expect(proto).toBe("UNIX");
      expect(ends).toBe(`${process.pid} ${server.target}`);
    }
  });

  test("a program that is not found or crashes costs that connection only", async () => {
    using dir = tempDir();
    await using bad = await startServer(["-s", "-l", "-f", "-p", "no-such-program-xyz", listen(dir.path)]);
    const reply = await exchange(bad.target, "x");
    expect(reply.data.toString()).toContain("not found");
    await using crash = await startServer(["-s", "-l", "-f", "-p", "kill -SEGV $$", listen(dir.path, "crash")]);
    for (let i = 0; i < 3; i++) expect((await exchange(crash.target, "x")).ended).toBe("closed");
    expect(isAlive(bad.proc.pid) && isAlive(crash.proc.pid)).toBe(true);
  });

  test("copy loop: a program that exits without reading costs that connection only", async () => {
    using dir = tempDir();
    await using server = await startServer(["-s", "-l", "-f", "-c", "-p", "exit 0", listen(dir.path)]);
    const big = "z".repeat(4_000_000);
    // Those connections may end in a reset (the peer is still sending): that is theirs to lose.
    for (let i = 0; i < 3; i++) await exchange(server.target, big).catch(() => undefined);
    expect(await exchange(server.target, "")).toMatchObject({ ended: "closed" });
    await using echo = await startServer(["-s", "-l", "-f", "-c", "-p", "cat", listen(dir.path, "echo")]);
    expect((await exchange(echo.target, "fine")).data.toString()).toBe("fine");
    expect(isAlive(server.proc.pid)).toBe(true);
    expect(server.stderr()).not.toContain("error");
  });

  test("-c: CR dropped from the socket, LF sent as CRLF", async () => {
    using dir = tempDir();
    await using server = await startServer(["-s", "-l", "-c", "-p", "cat", listen(dir.path)]);
    expect((await exchange(server.target, "a\r\nb\n")).data.toString()).toBe("a\r\nb\r\n");
  });

  test("-q closes the connection when the program's output ends", async () => {
    using dir = tempDir();
    await using server = await startServer(["-s", "-l", "-q", "-p", "echo bye", listen(dir.path)]);
    const reply = await exchange(server.target, "", { halfClose: false });
    expect(reply.data.toString()).toBe("bye\n");
    await waitFor("the -q message", () => server.stderr().includes("connection closed\n"));
  });

  test("-q closes at the end of the program's output, without waiting for it to exit", async () => {
    using dir = tempDir();
    await using server = await startServer(["-s", "-l", "-q", "-p", "echo bye; exec >&- 2>&-; sleep 3", listen(dir.path)]);
    const reply = await exchange(server.target, "", { halfClose: false, ms: 2000 });
    expect(reply).toMatchObject({ ended: "closed" });
    expect(reply.data.toString()).toBe("bye\n");
  });

  test("-r: only socket -> program; -w: only program -> socket", async () => {
    using dir = tempDir();
    const out = join(dir.path, "out");
    await using readOnly = await startServer(["-s", "-l", "-r", "-p", `cat > ${out}; echo never`, listen(dir.path)]);
    const reply = await exchange(readOnly.target, "to the program");
    expect(reply.data.length).toBe(0);
    await waitFor("the program's file", () => existsSync(out) && Bun.file(out).size > 0);
    expect(await Bun.file(out).text()).toBe("to the program");
    await using writeOnly = await startServer(["-s", "-l", "-w", "-p", "echo from program", listen(dir.path, "w")]);
    expect((await exchange(writeOnly.target, "unread", { halfClose: false })).data.toString()).toBe("from program\n");
  });

  test("-v says where it listens, who connected and how it ended", async () => {
    using dir = tempDir();
    await using server = await startServer(["-s", "-l", "-c", "-p", "cat", listen(dir.path)]);
    await exchange(server.target, "x");
    await waitFor("the closing message", () => server.stderr().includes("connection closed by peer"));
    const from = typeof server.target === "number" ? "inet: connection from 127.0.0.1" : `unix: connection from ${server.target}`;
    expect(server.stderr()).toContain(from);
  });

  test("TERM ends it with socket(1)'s message and status 241; INT with 254", async () => {
    using dir = tempDir();
    for (const [signal, text, status] of [
      ["SIGTERM", "Termination signal occured, exiting", 241],
      ["SIGINT", "Interrupt occured, exiting", 254],
      ["SIGHUP", "Hangup signal occured, exiting", 255],
    ] as const) {
      await using server = await startServer(["-s", "-l", "-p", "cat", listen(dir.path)]);
      server.proc.kill(signal);
      expect(await server.proc.exited).toBe(status);
      expect(server.stderr()).toContain(`\n${text}\n`);
      if (typeof server.target === "string") expect(existsSync(server.target)).toBe(false);
    }
  });
});

describe("server without -p", () => {
  test("the connection is joined to socket's own stdin and stdout", async () => {
    await using server = await startServer(["-s", "0"], { stdin: "pipe" });
    server.stdin!.write("from the server's stdin\n");
    server.stdin!.end();
    const reply = await exchange(server.target, "from the client\n");
    expect(reply.data.toString()).toBe("from the server's stdin\n");
    expect(await server.exited()).toBe(0);
    expect(server.stdout()).toBe("from the client\n");
  });
});

describe("UNIX socket files", () => {
  test("a stale socket file is replaced; a live one is address in use", async () => {
    using dir = tempDir();
    const path = join(dir.path, "s.sock");
    {
      await using first = await startServer(["-s", "-l", "-p", "cat", path]);
      await first.kill("SIGKILL"); // no chance to unlink: the file stays, stale
    }
    expect(lstatSync(path).isSocket()).toBe(true);
    await using second = await startServer(["-s", "-l", "-p", "cat", path]);
    expect((await exchange(path, "again")).data.toString()).toBe("again");
    const third = await run(["-s", "-l", "-p", "cat", path]);
    expect(third.status).toBe(1);
    expect(third.stderr).toBe("socket: server socket: Address already in use\n");
  });

  test("a file of another type is never removed", async () => {
    using dir = tempDir();
    const path = join(dir.path, "precious");
    writeFileSync(path, "data");
    const result = await run(["-s", "-p", "cat", path]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("is not a socket");
    expect(result.stderr.split("\n").length).toBe(2);
    expect(await Bun.file(path).text()).toBe("data");
  });

  test("a relative path (./name) is bound in the current directory", async () => {
    using dir = tempDir();
    await using server = await startServer(["-s", "-l", "-p", "cat", "./rel.sock"], { cwd: dir.path });
    expect(server.target).toBe(join(dir.path, "rel.sock")); // -v names it absolute
    expect(existsSync(join(dir.path, "rel.sock"))).toBe(true);
    expect((await exchange(join(dir.path, "rel.sock"), "rel")).data.toString()).toBe("rel");
  });
});

describe("TCP specifics", () => {
  test("port 0 gets a free port, which -v reports", async () => {
    await using server = await startServer(["-s", "-l", "-p", "cat", "0"]);
    expect(server.target).toBeGreaterThan(0);
    expect(server.stderr()).toMatch(/^inet: listening on port \d+\n/);
  });

  test("a service name port is reported with its name", async () => {
    // nntp is 119: only root may bind it, which the test machine's user is; skip otherwise.
    if (process.getuid?.() !== 0) return;
    await using server = await startServer(["-s", "-l", "-B", "127.0.0.1", "-p", "cat", "nntp"]);
    expect(server.stderr()).toContain("inet: listening on port 119 (nntp)");
  });

  test("address in use is reported with exit status 1", async () => {
    await using server = await startServer(["-s", "-l", "-p", "cat", "0"]);
    const second = await run(["-s", "-l", "-p", "cat", String(server.target)]);
    expect(second).toMatchObject({ status: 1, stderr: "socket: server socket: Address already in use\n" });
  });

  test("-B binds the listening address; IPv6 works", async () => {
    await using server = await startServer(["-s", "-l", "-B", "::1", "-p", "cat", "0"]);
    const client = await run(["::1", String(server.target)], { stdin: "six\n" });
    expect(client).toMatchObject({ status: 0, stdout: "six\n" });
    // Not on IPv4: bound to ::1 only.
    expect(exchange(server.target as number, "x")).rejects.toThrow();
  });

  test("-v on :: names an IPv4 peer 127.0.0.1, as its program's TCPREMOTEIP does (and the pool's line, and --slow's)", async () => {
    await using server = await startServer(["-s", "-l", "-f", "--slow", "0.05", "-B", "::", "-p", "sleep 0.2; echo $TCPREMOTEIP", "0"]);
    expect((await exchange(server.target as number, "")).data.toString()).toBe("127.0.0.1\n");
    await waitFor("the slow line", () => server.stderr().includes("slow: "));
    expect(server.stderr()).toContain("\ninet: connection from 127.0.0.1\n");
    expect(server.stderr()).toContain("socket: slow: connection from 127.0.0.1 still running after 0.05 s\n");
  });

  test("SO_REUSEADDR: a restarted server binds at once after serving", async () => {
    let port: Target;
    {
      await using first = await startServer(["-s", "-l", "-p", "cat", "0"]);
      port = first.target;
      expect((await exchange(port, "x")).data.toString()).toBe("x");
    }
    await using second = await startServer(["-s", "-l", "-p", "cat", String(port)]);
    expect((await exchange(port, "y")).data.toString()).toBe("y");
  });

  test("a burst of 200 simultaneous connects: none dropped (backlog is not 1)", async () => {
    await using server = await startServer(["-s", "-l", "-f", "-p", "cat", "0"]);
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) => exchange(server.target, `n${i}`, { ms: 20_000 })),
    );
    replies.forEach((r, i) => expect(r.data.toString()).toBe(`n${i}`));
  }, 30_000);
});

describe("-b background", () => {
  test("returns at once with 0 and the daemon serves, in a new session with cwd /", async () => {
    using dir = tempDir();
    const path = join(dir.path, "daemon.sock");
    await using starter = launch(["-b", "-s", "-l", "-f", "-p", "pwd; cut -d' ' -f6 /proc/$PPID/stat", path]);
    // A bound, not a wait for something: -b must return at once.
    expect(await Promise.race([starter.exited(), Bun.sleep(2000).then(() => "still running")])).toBe(0);
    let daemonPid = 0;
    try {
      await waitFor("the daemon's socket", () => existsSync(path));
      const [cwd, sid] = (await exchange(path, "")).data.toString().trim().split("\n");
      expect(cwd).toBe("/");
      daemonPid = pidsByCommandLine(path)[0];
      expect(Number(sid)).toBe(daemonPid); // session leader: setsid
    } finally {
      signalEach(pidsByCommandLine(path), "SIGTERM");
      await waitFor("the daemon to unlink its socket", () => !existsSync(path));
    }
  });

  test("from an executable whose path is not UTF-8: the daemon is this same image (Bun holds that path with U+FFFD, a file that is not there)", async () => {
    using dir = tempDir();
    // A spawn argument is a string, always UTF-8: sh runs the copy, its directory named caf\xe9 by printf.
    const bin = Buffer.concat([Buffer.from(`${dir.path}/caf`), Buffer.from([0xe9])]);
    mkdirSync(bin);
    copyFileSync(SOCKET, Buffer.concat([bin, Buffer.from("/socket")]));
    chmodSync(Buffer.concat([bin, Buffer.from("/socket")]), 0o755);
    const path = join(dir.path, "daemon.sock");
    const args = ["-b", "-s", "-l", "-f", "-p", "echo served", path];
    const started = await run(args, { wrap: ["sh", "-c", `exec "${dir.path}/caf$(printf '\\351')/socket" "$@"`] }); // $0: dist/socket, unused
    try {
      expect(started).toEqual({ status: 0, stdout: "", stderr: "" });
      expect((await exchange(path, "")).data.toString()).toBe("served\n");
    } finally {
      signalEach(pidsByCommandLine(path), "SIGTERM");
      await waitFor("the daemon to unlink its socket", () => !existsSync(path));
    }
  });
});
