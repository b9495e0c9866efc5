// --allow and --deny: a refused peer's connection is closed before any
// program runs (the program would leave a file behind), for the classic
// server and the pool, IPv4 and IPv6; bad rules are one-line usage errors.
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { AccessRules } from "../src/net/rules.ts";
import { launch, run, startServer, tempDir, waitFor, workersOf } from "./harness.ts";

const ACTIVATE = Bun.which("systemd-socket-activate");
if (!ACTIVATE) console.warn("rules.test: systemd-socket-activate missing (Debian package systemd): the passed UNIX socket case skipped");

/** The program: leaves ran.<peer address> in `dir`, then answers. */
const marker = (dir: string) => `touch ${dir}/ran.$TCPREMOTEIP; echo served`;

/** dist/socket's client from `source` (its -B) to `host` `port`: what it got. */
async function connectFrom(source: string, host: string, port: number): Promise<string> {
  return (await run(["-B", source, host, String(port)], { stdin: "" })).stdout;
}

const runners = [
  { name: "classic server", args: ["-l", "-f"] },
  { name: "pool", args: ["-W", "2"] },
];

describe.each(runners)("--allow/--deny, $name", ({ args }) => {
  test("--allow 127.0.0.2/32 serves 127.0.0.2 and closes 127.0.0.1 before its program runs", async () => {
    using dir = tempDir();
    await using server = await startServer([...args, "--allow", "127.0.0.2/32", "-p", marker(dir.path), "-s", "0"]);
    const port = server.target as number;
    expect(await connectFrom("127.0.0.2", "127.0.0.1", port)).toBe("served\n");
    expect(existsSync(join(dir.path, "ran.127.0.0.2"))).toBe(true);
    expect(await connectFrom("127.0.0.1", "127.0.0.1", port)).toBe("");
    await waitFor("the refused line", () => server.stderr().includes("inet: connection from 127.0.0.1 refused (--allow/--deny): closed"));
    expect(existsSync(join(dir.path, "ran.127.0.0.1"))).toBe(false);
  });

  test("the first rule that matches decides: --deny 127.0.0.2 --allow 127.0.0.0/8", async () => {
    using dir = tempDir();
    await using server = await startServer([...args, "--deny", "127.0.0.2", "--allow", "127.0.0.0/8", "-p", marker(dir.path), "-s", "0"]);
    const port = server.target as number;
    expect(await connectFrom("127.0.0.1", "127.0.0.1", port)).toBe("served\n");
    expect(await connectFrom("127.0.0.2", "127.0.0.1", port)).toBe("");
    expect(existsSync(join(dir.path, "ran.127.0.0.1"))).toBe(true);
    expect(existsSync(join(dir.path, "ran.127.0.0.2"))).toBe(false);
  });

  test("IPv6: --allow ::1/128 on :: serves ::1 and closes 127.0.0.1 (an IPv4-mapped peer matches IPv4 rules only)", async () => {
    using dir = tempDir();
    await using server = await startServer([...args, "-B", "::", "--allow", "::1/128", "-p", marker(dir.path), "-s", "0"]);
    const port = server.target as number;
    expect(await connectFrom("::1", "::1", port)).toBe("served\n");
    expect(existsSync(join(dir.path, "ran.::1"))).toBe(true);
    expect(await connectFrom("127.0.0.1", "127.0.0.1", port)).toBe("");
    await waitFor("the refused line", () => server.stderr().includes("refused (--allow/--deny)"));
    expect(existsSync(join(dir.path, "ran.127.0.0.1"))).toBe(false);
    expect(existsSync(join(dir.path, "ran.::ffff:127.0.0.1"))).toBe(false);
  });

  test("IPv6: --deny ::ffff:127.0.0.2 (a mapped network) on :: closes 127.0.0.2 and serves 127.0.0.1", async () => {
    using dir = tempDir();
    await using server = await startServer([...args, "-B", "::", "--deny", "::ffff:127.0.0.2/128", "-p", marker(dir.path), "-s", "0"]);
    const port = server.target as number;
    expect(await connectFrom("127.0.0.2", "127.0.0.1", port)).toBe("");
    await waitFor("the refused line", () => server.stderr().includes("refused (--allow/--deny)"));
    expect(existsSync(join(dir.path, "ran.::ffff:127.0.0.2"))).toBe(false);
    expect(await connectFrom("127.0.0.1", "127.0.0.1", port)).toBe("served\n");
  });
});

describe("rules (unit)", () => {
  const permits = (rules: [allow: boolean, cidr: string][], ip: string) => new AccessRules(rules.map(([allow, cidr]) => ({ allow, cidr }))).permits(ip);

  test("a mapped network is the IPv4 network it maps, for mapped and plain IPv4 peers alike", () => {
    expect(permits([[false, "::ffff:10.0.0.0/104"]], "::ffff:10.1.2.3")).toBe(false);
    expect(permits([[false, "::ffff:10.0.0.0/104"]], "10.1.2.3")).toBe(false);
    expect(permits([[false, "::ffff:10.0.0.0/104"]], "::ffff:11.1.2.3")).toBe(true);
    expect(permits([[true, "::ffff:10.0.0.1"]], "10.0.0.1")).toBe(true);
    expect(permits([[true, "::ffff:10.0.0.1"]], "10.0.0.2")).toBe(false);
    expect(permits([[true, "::ffff:0.0.0.0/96"]], "192.0.2.1")).toBe(true);
  });

  test("IPv4 rules match mapped peers; IPv6 networks never match IPv4 peers", () => {
    expect(permits([[false, "10.0.0.0/8"]], "::ffff:10.9.9.9")).toBe(false);
    expect(permits([[false, "::/0"]], "10.9.9.9")).toBe(true);
    expect(permits([[false, "::/0"]], "2001:db8::1")).toBe(false);
    expect(permits([[true, "2001:db8::/32"]], "2001:db8:1::1")).toBe(true);
    expect(permits([[true, "2001:db8::/32"]], "2001:db9::1")).toBe(false);
  });
});

test("the pool counts refused connections on its status page", async () => {
  using dir = tempDir();
  // 127.0.0.2 is denied, not 127.0.0.1: the rules apply to the status page too, which the test reads from 127.0.0.1.
  await using server = await startServer(["-W", "1", "--status", "127.0.0.1:0", "--deny", "127.0.0.2", "-p", marker(dir.path), "-s", "0"]);
  let base = "";
  await waitFor("the status line", () => (base = server.stderr().match(/status page on http:\/\/127\.0\.0\.1(:\d+)/)?.[1] ?? "") !== "");
  await waitFor("1 worker", () => workersOf(server.proc.pid).length === 1);
  expect(await connectFrom("127.0.0.2", "127.0.0.1", server.target as number)).toBe("");
  expect(await connectFrom("127.0.0.2", "127.0.0.1", server.target as number)).toBe("");
  await waitFor("refused conn 2", async () => {
    const page = await (await fetch(`http://127.0.0.1${base}/status?json`)).json();
    return (page as Record<string, number>)["refused conn"] === 2 && (page as Record<string, number>)["accepted conn"] === 0;
  });
});

describe("bad rules", () => {
  test.each([
    ["--allow", "10.0.0.0/33"],
    ["--allow", "300.1.2.3"],
    ["--deny", "nonsense"],
    ["--deny", "::1/129"],
    ["--allow", "10.0.0.0/8/8"],
    ["--allow", "10.0.0.0/"],
  ])("%s %s: one line, exit 15", async (option, cidr) => {
    const result = await run(["-s", "-p", "cat", option, cidr, "0"]);
    expect(result.status).toBe(15);
    expect(result.stderr).toBe(`socket: ${option} wants an IPv4 or IPv6 address with an optional /PREFIX (such as 10.0.0.0/8 or ::1/128), not '${cidr}'\n`);
  });

  test("--allow on a UNIX socket or a client is a usage error", async () => {
    using dir = tempDir();
    expect((await run(["-s", "--allow", "127.0.0.1", join(dir.path, "s.sock")])).status).toBe(15);
    expect((await run(["--allow", "127.0.0.1", "127.0.0.1", "1"])).status).toBe(15);
  });
});

describe.each(runners)("--allow on a passed UNIX socket, $name", ({ args }) => {
  // The command line cannot tell what systemd passed: the runner refuses it rather than let everyone in.
  test.skipIf(!ACTIVATE)("is refused at start: one line, exit 15", async () => {
    using dir = tempDir();
    const path = join(dir.path, "passed.sock");
    await using server = launch([...args, "--allow", "127.0.0.1", "-p", "cat", "-s"], { wrap: [ACTIVATE!, "-l", path] });
    await waitFor("the activator to listen", () => server.stderr().includes("Listening on"));
    const client = await Bun.connect({ unix: path, socket: { data() {} } }); // the activator starts socket on a connection
    expect(await server.exited()).toBe(15);
    client.terminate();
    expect(server.stderr()).toEndWith("\nsocket: --allow and --deny are for a TCP server (a UNIX socket has --mode, -u and -g)\n");
  });
});
