// What the source's reshaping had to keep or mend, seen from outside: an
// IPv4-mapped IPv6 literal reaches an IPv4 server (the address codec is
// the C library's now), and a worker given a malformed configuration says
// so in one line instead of a TypeError.
import { expect, test } from "bun:test";
import { run, startServer } from "./harness.ts";

test("a client connects to ::ffff:127.0.0.1, an IPv4 server's address written as IPv6", async () => {
  await using server = await startServer(["-B", "127.0.0.1", "-l", "-p", "echo mapped", "-s", "0"]);
  const reply = await run(["::ffff:127.0.0.1", String(server.target)]);
  expect(reply).toEqual({ status: 0, stdout: "mapped\n", stderr: "" });
});

test("-v shows an IPv4-mapped peer as IPv4, and IPv6 peers as inet_ntop writes them", async () => {
  await using server = await startServer(["-B", "::", "-l", "-p", "echo $TCPREMOTEIP", "-s", "0"]);
  expect((await run(["::ffff:127.0.0.1", String(server.target)])).stdout).toBe("127.0.0.1\n");
  expect((await run(["::1", String(server.target)])).stdout).toBe("::1\n");
});

for (const [what, config] of [
  ["not JSON", "{"],
  ["no argv", JSON.stringify({ address: { kind: "unix", path: "/x" }, masterPid: 1 })],
  ["a command line that is not a pool's", JSON.stringify({ argv: ["-s", "7"], address: { kind: "unix", path: "/x" }, masterPid: 1 })],
] as const) {
  test(`a worker given a malformed configuration (${what}) fails with one line`, async () => {
    const { status, stderr } = await run(["--pool-worker"], { env: { SOCKET_WORKER: config } });
    expect(status).toBe(5); // EXIT_START_FAILED: a pool's master gives up on it before it first serves
    expect(stderr).toMatch(/^socket: worker: malformed configuration from the master \([^)]+\)\n$/);
  });
}
