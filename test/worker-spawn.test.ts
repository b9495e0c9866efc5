// A pool worker starts its programs with posix_spawn and waits on their
// pidfds itself (connection/process.ts): what a program gets must be what
// Bun.spawn gave it, in each way a worker starts one (the hand-off,
// --prestart's bridge, -q's splice), and how it ended must still be told.
import { describe, expect, test } from "bun:test";
import { exchange, startServer, waitFor, workersOf } from "./harness.ts";

const modes = [
  { name: "the hand-off", extra: [] as string[] },
  { name: "--prestart", extra: ["--prestart"] },
  { name: "-q (spliced)", extra: ["-q"] },
];

/** The variables `env` printed, as a map. */
function variables(text: string): Map<string, string> {
  return new Map(text.split("\n").filter((l) => l.includes("=")).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
}

describe.each(modes)("a pool worker's program through $name", ({ extra }) => {
  test("gets the UCSPI variables of its connection and none inherited, listening on one address or on all", async () => {
    for (const bind of [["-B", "127.0.0.1"], []]) {
      // Stale values in socket's own environment (run under tcpserver, say) must not reach a program.
      await using server = await startServer(["-p", "env", "-l", "-f", "-W", "1", ...extra, ...bind, "-s", "0"], {
        env: { PROTO: "stale", TCPREMOTEIP: "192.0.2.1", TCPREMOTEPORT: "1", KEPT_VARIABLE: "kept" },
      });
      const env = variables((await exchange(server.target, "")).data.toString());
      expect(env.get("PROTO")).toBe("TCP");
      // --prestart's program starts before its connection: it gets the address listened on.
      expect(env.get("TCPLOCALIP")).toBe(extra.includes("--prestart") && bind.length === 0 ? "0.0.0.0" : "127.0.0.1");
      expect(env.get("TCPLOCALPORT")).toBe(String(server.target));
      expect(env.get("KEPT_VARIABLE")).toBe("kept");
      if (extra.includes("--prestart")) {
        // Started before its connection: no remote address at all, not a stale one.
        expect(env.has("TCPREMOTEIP")).toBe(false);
        expect(env.has("TCPREMOTEPORT")).toBe(false);
      } else {
        expect(env.get("TCPREMOTEIP")).toBe("127.0.0.1");
        expect(env.get("TCPREMOTEPORT")).toMatch(/^\d+$/);
        expect(env.get("TCPREMOTEPORT")).not.toBe("1");
      }
    }
  }, 20_000);

  test("has descriptors 0-2 only, no signal ignored and none blocked", async () => {
    await using fds = await startServer(["-p", "ls /proc/self/fd", "-l", "-f", "-W", "1", ...extra, "-s", "0"]);
    // ls's own directory descriptor is the 3; a worker's listener, control socket or epoll would be more.
    expect((await exchange(fds.target, "")).data.toString().split("\n").filter(Boolean).sort()).toEqual(["0", "1", "2", "3"]);
    await using status = await startServer(["-p", "cat /proc/self/status", "-l", "-f", "-W", "1", ...extra, "-s", "0"]);
    const lines = (await exchange(status.target, "")).data.toString();
    const mask = (name: string) => BigInt(`0x${lines.match(new RegExp(`^${name}:\\s+([0-9a-f]+)$`, "m"))![1]}`);
    // A worker ignores SIGPIPE and SIGXFSZ (Bun does); its programs must not. Signals 32 and 33 are
    // glibc's own (no glibc program can use them) and its posix_spawn cannot reset them: left out.
    const GLIBC_OWN = (1n << 31n) | (1n << 32n);
    expect(mask("SigIgn") & ~GLIBC_OWN).toBe(0n);
    expect(mask("SigBlk")).toBe(0n);
  }, 20_000);

  // --prestart says nothing at a program's end (unchanged): only the hand-off and -q have the end line.
  test.skipIf(extra.includes("--prestart"))("-v's end line says how it ended (a signal, a status), and exit 127 is reported", async () => {
    await using server = await startServer(["-p", "kill -9 $$", "-W", "1", ...extra, "-s", "0"]);
    await exchange(server.target, "");
    await waitFor("the end line", () => /end \d+ signal SIGKILL \(\d+ ms\)/.test(server.stderr()));
    await using missing = await startServer(["-p", "no-such-command-anywhere", "-W", "1", ...extra, "-s", "0"]);
    await exchange(missing.target, "");
    await waitFor("the exit 127 line", () => /end \d+ status 127/.test(missing.stderr()) && /exit 127 \(command not found\)/.test(missing.stderr()));
  }, 20_000);
});

test("a worker waiting for its program still drains on TERM: the connection in hand is finished, then it exits", async () => {
  await using server = await startServer(["-p", "sleep 0.5; echo done", "-W", "1", "-s", "0"]);
  await waitFor("the worker", () => workersOf(server.proc.pid).length === 1);
  const [worker] = workersOf(server.proc.pid);
  const reply = exchange(server.target, "");
  await waitFor("the program", () => /inet: connection from/.test(server.stderr()));
  process.kill(worker, "SIGTERM");
  expect((await reply).data.toString()).toBe("done\n");
  await waitFor("the worker's exit", () => !workersOf(server.proc.pid).includes(worker));
}, 20_000);
