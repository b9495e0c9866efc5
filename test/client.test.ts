// Client mode, TCP and UNIX, against servers made here with Bun.listen.
import { describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { collect, launch, peerServer, run, startServer, tempDir, waitFor, type Target } from "./harness.ts";

const kinds = [
  { name: "TCP", args: (t: Target) => ["127.0.0.1", String(t)], where: (_dir: string) => ({}) },
  { name: "UNIX", args: (t: Target) => [String(t)], where: (dir: string) => ({ unix: join(dir, "peer.sock") }) },
];

describe.each(kinds)("client over $name", ({ args, where }) => {
  test("stdin goes to the peer; EOF half-closes and the answer still arrives", async () => {
    using dir = tempDir();
    // The peer answers only once it has seen our EOF (socket 1.1 never sent one).
    using peer = peerServer(
      () => {},
      where(dir.path),
      (s) => {
        s.write(`answer to ${Buffer.concat(s.data.received).toString()}`);
        s.end();
      },
    );
    const result = await run([...args(peer.target)], { stdin: "question\n" });
    expect(result).toMatchObject({ status: 0, stdout: "answer to question\n" });
  });

  test("-v: the peer's close after our EOF is said too (Bun gives a half-closed socket no end event)", async () => {
    using dir = tempDir();
    using peer = peerServer(() => {}, where(dir.path), (s) => void s.end("answer\n"));
    const result = await run(["-v", ...args(peer.target)], { stdin: "question\n" });
    expect(result).toMatchObject({ status: 0, stdout: "answer\n" });
    expect(result.stderr).toEndWith("end of input on stdin\nconnection closed by peer\n");
  });

  test("the peer's bytes go to stdout and its close ends the client with 0", async () => {
    using dir = tempDir();
    using peer = peerServer((s) => {
      s.write("hello from peer\n");
      s.end();
    }, where(dir.path));
    const result = await run(["-r", ...args(peer.target)]);
    expect(result).toMatchObject({ status: 0, stdout: "hello from peer\n" });
  });

  test("-c turns LF into CRLF on the way out and drops CR on the way in", async () => {
    using dir = tempDir();
    // The peer ends once the client's EOF says all of stdin was sent (peerServer's default onEnd).
    using peer = peerServer((s) => void s.write("a\r\nb\r\n"), where(dir.path));
    const result = await run(["-c", ...args(peer.target)], { stdin: "x\ny\n" });
    expect(result.stdout).toBe("a\nb\n");
    await waitFor("the CRLF lines", () => Buffer.concat(peer.received[0] ?? []).toString() === "x\r\ny\r\n");
  });

  test("-w sends stdin and never reads the socket", async () => {
    using dir = tempDir();
    using peer = peerServer((s) => void s.write("unread\n"), where(dir.path));
    const result = await run(["-w", ...args(peer.target)], { stdin: "only out\n" });
    expect(result).toMatchObject({ status: 0, stdout: "" });
    await waitFor("stdin at the peer", () => Buffer.concat(peer.received[0] ?? []).toString() === "only out\n");
  });

  test("-q closes the connection at EOF on stdin", async () => {
    using dir = tempDir();
    // This peer never closes: without -q the client would wait for it.
    using peer = peerServer(() => {}, where(dir.path));
    const result = await run(["-q", "-v", ...args(peer.target)], { stdin: "bye\n", ms: 3000 });
    expect(result.status).toBe(0);
    expect(result.stderr).toContain("connection closed\n");
  });

  test("-p runs the program on the connection", async () => {
    using dir = tempDir();
    using peer = peerServer((s) => {
      s.write("ping\n");
    }, where(dir.path));
    const result = await run(["-p", "read line; echo got:$line", ...args(peer.target)]);
    expect(result.status).toBe(0);
    await waitFor("the program's answer", () => Buffer.concat(peer.received[0] ?? []).toString() === "got:ping\n");
  });
});

describe("client errors and addresses", () => {
  test("connection refused: the errno as status (111)", async () => {
    using peer = peerServer(() => {});
    const port = peer.target as number;
    peer[Symbol.dispose]();
    expect(await run(["127.0.0.1", String(port)])).toMatchObject({
      status: 111,
      stderr: "socket: client socket: Connection refused\n",
    });
  });

  test("a missing UNIX path: status 2", async () => {
    using dir = tempDir();
    expect(await run([join(dir.path, "none.sock")])).toMatchObject({
      status: 2,
      stderr: "socket: client socket: No such file or directory\n",
    });
  });

  test("-B binds the client's local address", async () => {
    let seen = "";
    using peer = peerServer((s) => {
      seen = s.remoteAddress;
      s.end();
    });
    const result = await run(["-B", "127.0.0.2", "127.0.0.1", String(peer.target)]);
    expect(result.status).toBe(0);
    expect(seen).toBe("127.0.0.2");
  });

  test("host names resolve (localhost)", async () => {
    using peer = peerServer((s) => {
      s.write("named\n");
      s.end();
    });
    expect((await run(["-r", "localhost", String(peer.target)])).stdout).toBe("named\n");
  });

  test("-v says where it connected", async () => {
    using peer = peerServer((s) => void s.end());
    const result = await run(["-v", "-r", "127.0.0.1", String(peer.target)]);
    expect(result.stderr).toContain(`inet: connected to 127.0.0.1 port ${peer.target}\n`);
    expect(result.stderr).toContain("connection closed by peer\n");
  });

  test("INT while connected: message and status 254", async () => {
    using peer = peerServer(() => {});
    await using client = launch(["127.0.0.1", String(peer.target)], { stdin: "pipe" });
    await waitFor("the connection", () => peer.received.length === 1);
    client.proc.kill("SIGINT");
    expect(await client.exited()).toBe(254);
    expect(client.stderr()).toBe("\nInterrupt occured, exiting\n");
  });
});

/** A mount namespace of its own whose /etc/hosts is `hosts` (root, or user namespaces): names resolved as a system so configured would. */
function withHosts(hosts: string): { wrap: string[] } & Disposable {
  const dir = tempDir();
  const file = join(dir.path, "hosts");
  writeFileSync(file, hosts);
  return { wrap: ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', file], [Symbol.dispose]: () => dir[Symbol.dispose]() };
}
const canMount = Bun.spawnSync(["unshare", "--mount", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"]).exitCode === 0;
if (!canMount) console.warn("client.test: unshare --mount with a bind mount fails here (needs root or user namespaces): the /etc/hosts cases skipped");

// Debian's own /etc/hosts names localhost both 127.0.0.1 and ::1, and getaddrinfo puts ::1 first.
describe.skipIf(!canMount)("a name with IPv4 and IPv6 addresses (::1 listed first)", () => {
  const HOSTS = "::1 both.test\n127.0.0.1 both.test\n";

  test("a client reaches a server on 0.0.0.0 by that name: IPv4 first, as socket(1)'s gethostbyname", async () => {
    using hosts = withHosts(HOSTS);
    await using server = await startServer(["-p", "echo served $TCPLOCALIP", "-s", "0"]);
    const result = await run(["-v", "both.test", String(server.target)], { wrap: hosts.wrap });
    expect(result).toMatchObject({ status: 0, stdout: "served 127.0.0.1\n" });
    expect(result.stderr).toStartWith(`inet: connected to 127.0.0.1 port ${server.target}\n`);
  });

  test("a client whose first address refuses tries the next (a server on ::1 only)", async () => {
    using hosts = withHosts(HOSTS);
    const listener = Bun.listen({ hostname: "::1", port: 0, socket: { open: (s) => void s.end("on ::1\n"), data() {} } });
    try {
      const result = await run(["-v", "-r", "both.test", String(listener.port)], { wrap: hosts.wrap });
      expect(result).toMatchObject({ status: 0, stdout: "on ::1\n" });
      expect(result.stderr).toStartWith(`inet: connected to ::1 port ${listener.port}\n`);
    } finally {
      listener.stop(true);
    }
  });

  test("nothing at either address: the first address's error and errno", async () => {
    using hosts = withHosts(HOSTS);
    expect(await run(["both.test", "1"], { wrap: hosts.wrap })).toMatchObject({ status: 111, stderr: "socket: client socket: Connection refused\n" });
  });

  test("-B with that name binds the server to its IPv4 address", async () => {
    using hosts = withHosts(HOSTS);
    await using server = await startServer(["-B", "both.test", "-p", "echo served $TCPLOCALIP", "-s", "0"], { wrap: hosts.wrap });
    expect((await run(["127.0.0.1", String(server.target)])).stdout).toBe("served 127.0.0.1\n");
  });
});

/** A TCP listener (python3) with a backlog of 0 already full: the kernel drops the next SYN, so a connect stays under way. */
async function fullListener(): Promise<{ port: number } & AsyncDisposable> {
  const script = `
import socket, sys, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(0)
held = []
for _ in range(3):
    c = socket.socket(); c.setblocking(False); c.connect_ex(l.getsockname()); held.append(c)
print(l.getsockname()[1], flush=True)
time.sleep(60)`;
  const proc = Bun.spawn(["python3", "-c", script], { stdout: "pipe", stderr: "ignore" });
  const out = collect(proc.stdout);
  await waitFor("the listener's port", () => /\d+\n/.test(out.text()));
  return { port: Number(out.text().trim()), [Symbol.asyncDispose]: async () => void (proc.kill("SIGKILL"), await proc.exited) };
}

test("INT while the connect is under way (the peer's backlog is full): socket(1)'s message and 254 at once", async () => {
  await using listener = await fullListener();
  // Connections in SYN-SENT to the port: the listener's own held ones, then socket's too.
  const synSent = () => readFileSync("/proc/net/tcp", "utf8").split(`:${listener.port.toString(16).toUpperCase().padStart(4, "0")} 02 `).length - 1;
  const held = synSent();
  await using client = launch(["127.0.0.1", String(listener.port)], { stdin: "pipe" });
  await waitFor("socket's connect under way", () => synSent() > held);
  client.proc.kill("SIGINT");
  const status = await Promise.race([client.exited(), Bun.sleep(3000).then(() => -1)]);
  expect(status).toBe(254);
  expect(client.stderr()).toBe("\nInterrupt occured, exiting\n");
});
