// A request the web server has already sent is served, whatever socket is
// told at that moment: a stop (TERM's drain), a reload, an upgrade, a
// retirement. Each case is made deterministic the way a busy machine makes
// it by chance: the process is stopped (SIGSTOP), the events are arranged
// (the request sent and sitting unread in socket's receive queue, the
// signal or the master's word sent), then it runs on (SIGCONT) and sees
// them all in one wake-up. dist/socket on real sockets.
import { expect, test } from "bun:test";
import { existsSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { childrenOf, exchange, isAlive, serverHasRead, signalEach, startServer, tempDir, waitFor, workersOf, writeExecutable, type Server } from "./harness.ts";
import { converse, endRequests, fcgiRequest, parseRecords, unread } from "./gateway-peers.ts";
import { KEPT_HEADER_MS, KEPT_IDLE_MS } from "../src/request/fastcgi-engine.ts";

const PATH = { PATH: "/usr/local/bin:/usr/bin:/bin" };
const POST = (id: number, keep = true) => fcgiRequest(id, [["REQUEST_METHOD", "POST"], ["CONTENT_LENGTH", "4"]], new TextEncoder().encode("body"), keep);
/** A POST with an empty body, CONTENT_LENGTH empty (as nginx sends it): the CGI gets no stdin pipe. */
const EMPTY_POST = (id: number) => fcgiRequest(id, [["REQUEST_METHOD", "POST"]], new Uint8Array(0), true);

/** A CGI that answers without reading its body (RFC 3875 allows it; the body's end comes before its output goes). */
function hello(dir: string): string {
  return writeExecutable(join(dir, "hi.cgi"), `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'\n`);
}

/** Runs `arrange` with `pid` stopped, then lets it run on: it sees what was arranged in one wake-up. */
async function whileStopped<T>(pid: number, arrange: () => Promise<T>): Promise<T> {
  process.kill(pid, "SIGSTOP");
  try {
    return await arrange();
  } finally {
    process.kill(pid, "SIGCONT");
  }
}

/** An -l -f FastCGI server that drains for up to 5 s on TERM. */
async function classic(dir: string): Promise<Server> {
  return startServer(["--fastcgi", "-l", "-f", "--grace", "5", "-p", hello(dir), "-s", "0"], { env: PATH });
}

const TERM_LINE = "Termination signal occured, exiting";

/**
 * A kept connection that sends `first` and stops `pid` the moment that request's END_REQUEST arrives:
 * socket is still finishing it, its loop busy, as on a loaded machine.
 */
async function stopAtAnswer(port: number, pid: number, first: Uint8Array) {
  let stopped = false;
  const client = await converse(port, {
    data: (all) => {
      if (stopped || endRequests(parseRecords(all)).length === 0) return;
      stopped = true;
      process.kill(pid, "SIGSTOP");
    },
  });
  client.send(first);
  await waitFor("the first answer", () => stopped);
  return client;
}

test("-l -f: a request already sent on an idle kept connection when TERM comes is served, then the connection ends", async () => {
  using dir = tempDir();
  await using server = await classic(dir.path);
  const port = Number(server.target);
  const pid = server.proc.pid;
  const kept = await stopAtAnswer(port, pid, EMPTY_POST(1));
  try {
    kept.send(EMPTY_POST(2));
    await waitFor("the request in socket's receive queue", () => unread(port, kept.localPort) > 0);
    process.kill(pid, "SIGTERM");
  } finally {
    process.kill(pid, "SIGCONT");
  }
  await kept.closed(); // the request it was serving was its last
  expect(endRequests(parseRecords(kept.data())).map((e) => e.id)).toEqual([1, 2]);
  expect(parseRecords(kept.data()).stdout.match(/hi/g)?.length).toBe(2);
  expect(await server.exited()).toBe(241);
}, 15_000);

test("-l -f: a connection waiting in the queue with its request when TERM comes is served", async () => {
  using dir = tempDir();
  await using server = await classic(dir.path);
  const port = Number(server.target);
  const client = await whileStopped(server.proc.pid, async () => {
    const client = await converse(server.target);
    client.send(POST(1, false));
    await waitFor("the request in the queued connection", () => unread(port, client.localPort) > 0);
    process.kill(server.proc.pid, "SIGTERM");
    return client;
  });
  const data = await client.until("the answer", (d) => endRequests(parseRecords(d)).length === 1);
  expect(parseRecords(data).stdout).toContain("hi");
  expect(await server.exited()).toBe(241);
  client.close();
}, 15_000);

test("-l -f: a connection accepted before TERM, its request sent after, is served", async () => {
  using dir = tempDir();
  await using server = await classic(dir.path);
  const client = await converse(server.target);
  await waitFor("the accept", () => server.stderr().includes("connection from"));
  process.kill(server.proc.pid, "SIGTERM");
  await waitFor("the TERM's drain", () => server.stderr().includes(TERM_LINE));
  client.send(POST(1));
  const data = await client.until("the answer", (d) => endRequests(parseRecords(d)).length === 1);
  expect(parseRecords(data).stdout).toContain("hi");
  await client.closed(); // leaving: no request after this one
  expect(await server.exited()).toBe(241);
  client.close();
}, 15_000);

test("-l -f: a kept connection with part of its next request read when TERM comes gets that request served", async () => {
  using dir = tempDir();
  await using server = await classic(dir.path);
  const port = Number(server.target);
  const kept = await converse(server.target);
  kept.send(POST(1));
  await kept.until("the first answer", (data) => endRequests(parseRecords(data)).length === 1);
  const next = POST(2);
  kept.send(next.subarray(0, 5)); // inside BEGIN_REQUEST's header: no whole record yet
  await serverHasRead(kept, port);
  process.kill(server.proc.pid, "SIGTERM");
  await waitFor("the TERM's drain", () => server.stderr().includes(TERM_LINE));
  kept.send(next.subarray(5));
  const data = await kept.until("the second answer", (d) => endRequests(parseRecords(d)).length === 2);
  expect(parseRecords(data).stdout.match(/hi/g)?.length).toBe(2);
  await kept.closed();
  expect(await server.exited()).toBe(241);
  kept.close();
}, 15_000);

// A connection that has not sent a whole header when TERM comes is given KEPT_HEADER_MS (as a leaving worker gives one), not --grace.
test.each([
  { what: "nothing", bytes: 0 },
  { what: "half a record", bytes: 4 },
  { what: "a BEGIN_REQUEST and no PARAMS", bytes: 16 },
])("-l -f: a connection that sent $what when TERM comes does not hold the drain for --grace", async ({ bytes }) => {
  using dir = tempDir();
  await using server = await classic(dir.path); // --grace 5
  const client = await converse(server.target);
  if (bytes > 0) client.send(POST(1).subarray(0, bytes));
  await waitFor("the accept", () => server.stderr().includes("connection from"));
  if (bytes > 0) await serverHasRead(client, Number(server.target));
  const termAt = performance.now();
  process.kill(server.proc.pid, "SIGTERM");
  await client.closed();
  expect(await server.exited()).toBe(241);
  expect(performance.now() - termAt).toBeLessThan(KEPT_HEADER_MS + 2000);
  client.close();
}, 15_000);

/** Bytes unread on descriptor `fd` of process `pid`, a UNIX stream socket (ss's Recv-Q): the master's word, for a worker's fd 4. */
function unixUnread(pid: number, fd: number): number {
  const inode = readlinkSync(`/proc/${pid}/fd/${fd}`).match(/socket:\[(\d+)\]/)?.[1];
  const rows = Bun.spawnSync(["ss", "-xH"]).stdout.toString().split("\n");
  const row = rows.map((line) => line.trim().split(/\s+/)).find((f) => f[4] === "*" && f[5] === inode);
  return row ? Number(row[2]) : -1;
}

/** A FastCGI client on a kept connection, and when its first END_REQUEST came and when it ended (performance.now()). */
async function timedClient(port: number) {
  const at = { answer: 0, end: 0 };
  const client = await converse(port, {
    data: (all) => {
      if (at.answer === 0 && endRequests(parseRecords(all)).length > 0) at.answer = performance.now();
    },
    end: () => void (at.end ||= performance.now()),
  });
  return { ...client, at };
}

// The master's LEAVE (HUP) reaches a worker in the middle of a kept connection's request, in each of its phases.
const phases = [
  { phase: "its body still coming", cgi: "cat > /dev/null", split: true },
  { phase: "its program running", cgi: "while [ ! -e go ]; do sleep 0.02; done", split: false },
  { phase: "its output over, its program not yet exited", cgi: "exec >&- 2>&-; while [ ! -e go ]; do sleep 0.02; done", split: false },
];

test.each(phases)("-W 1: a LEAVE heard while a kept connection's request has $phase: the request is served and the connection kept, the web server's to close", async ({ cgi, split }) => {
  using dir = tempDir();
  const started = join(dir.path, "started");
  const program = writeExecutable(join(dir.path, "wait.cgi"), `#!/bin/sh\ncd ${dir.path}\ntouch started\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'\n${cgi}\n`);
  await using server = await startServer(["--fastcgi", "-W", "1", "-p", program, "-s", "0"], { env: PATH });
  const port = Number(server.target);
  await waitFor("the worker", () => workersOf(server.proc.pid).length === 1);
  const [old] = workersOf(server.proc.pid);
  const client = await timedClient(port);
  const request = POST(1);
  const cut = split ? request.length - 12 : request.length; // the body's last byte and its empty STDIN held back
  client.send(request.subarray(0, cut));
  await waitFor("the program", () => existsSync(started));
  // The word lined up while the worker is stopped, then heard (read) by it: the request is under way.
  await whileStopped(old, async () => {
    process.kill(server.proc.pid, "SIGHUP");
    await waitFor("the master's LEAVE at the old worker", () => unixUnread(old, 4) === 1);
  });
  await waitFor("the old worker to hear it", () => unixUnread(old, 4) === 0);
  if (split) await serverHasRead(client, port);
  client.send(request.subarray(cut));
  writeFileSync(join(dir.path, "go"), "");
  await waitFor("the answer", () => client.at.answer > 0);
  expect(parseRecords(client.data()).stdout).toEndWith("hi\n");
  expect(endRequests(parseRecords(client.data()))).toEqual([{ id: 1, app: 0, protocol: 0 }]);
  await retiredUntilClosed(server, old, client);
}, 15_000);

/**
 * A retired worker's kept connection after its request: not ended by socket, whose close could cross the web
 * server's next request (twice a stopping worker's quiet), its worker alive; the web server's close ends both.
 */
async function retiredUntilClosed(server: Server, old: number, client: Awaited<ReturnType<typeof timedClient>>) {
  await Bun.sleep(2 * KEPT_IDLE_MS); // a close that does not come: the behaviour under test
  expect(client.at.end).toBe(0);
  expect(isAlive(old)).toBe(true);
  client.close();
  await waitFor("the old worker to leave", () => !workersOf(server.proc.pid).includes(old));
}

/** `--fastcgi -W 1`'s one worker, and a kept connection that has had one request (answered). */
async function keptAfterOne(server: Server) {
  const port = Number(server.target);
  await waitFor("the worker", () => workersOf(server.proc.pid).length === 1);
  const [old] = workersOf(server.proc.pid);
  const kept = await timedClient(port);
  kept.send(POST(1));
  await waitFor("the first answer", () => kept.at.answer > 0);
  return { port, old, kept };
}

test("-W 1: a request on a kept connection quiet long enough to close, seen in the same wake-up as the master's LEAVE, is served", async () => {
  using dir = tempDir();
  await using server = await startServer(["--fastcgi", "-W", "1", "-p", hello(dir.path), "-s", "0"], { env: PATH });
  const { port, old, kept } = await keptAfterOne(server);
  await Bun.sleep(KEPT_IDLE_MS + 100); // quiet past the rule's time: the case under test
  await whileStopped(old, async () => {
    process.kill(server.proc.pid, "SIGHUP");
    await waitFor("the master's LEAVE at the old worker", () => unixUnread(old, 4) === 1);
    kept.send(POST(2));
    await waitFor("the request in the old worker's socket", () => unread(port, kept.localPort) > 0);
  });
  await waitFor("the second answer", () => endRequests(parseRecords(kept.data())).length === 2);
  expect(endRequests(parseRecords(kept.data())).map((e) => e.id)).toEqual([1, 2]);
  await retiredUntilClosed(server, old, kept);
}, 15_000);

/** `--fastcgi -W 1`'s server with a kept connection that has had one request and is idle, then HUP heard by its worker (the word read). */
async function retiredWhileIdle(server: Server) {
  const { old, kept } = await keptAfterOne(server);
  await whileStopped(old, async () => {
    process.kill(server.proc.pid, "SIGHUP");
    await waitFor("the master's LEAVE at the old worker", () => unixUnread(old, 4) === 1);
  });
  await waitFor("the old worker to hear it", () => unixUnread(old, 4) === 0);
  await waitFor("the new worker", () => workersOf(server.proc.pid).some((pid) => pid !== old));
  return { old, kept };
}

test("-W 1: a kept connection idle when HUP comes is kept however quiet; its next request is served, and the connection still kept", async () => {
  using dir = tempDir();
  await using server = await startServer(["--fastcgi", "-W", "1", "-p", hello(dir.path), "-s", "0"], { env: PATH });
  const { old, kept } = await retiredWhileIdle(server);
  // Quiet three times as long as a stopping worker waits before it closes: a close now could cross nginx's next request.
  await Bun.sleep(3 * KEPT_IDLE_MS);
  expect(kept.at.end).toBe(0);
  expect(isAlive(old)).toBe(true);
  kept.send(POST(2));
  await waitFor("the second answer", () => endRequests(parseRecords(kept.data())).length === 2);
  expect(endRequests(parseRecords(kept.data())).map((e) => e.id)).toEqual([1, 2]);
  await retiredUntilClosed(server, old, kept);
}, 15_000);

test("-W 1: a TERM to the master then stops that connection once quiet, not after --grace", async () => {
  using dir = tempDir();
  await using server = await startServer(["--fastcgi", "-W", "1", "-p", hello(dir.path), "-s", "0"], { env: PATH });
  const { kept } = await retiredWhileIdle(server);
  const termAt = performance.now();
  process.kill(server.proc.pid, "SIGTERM"); // the master alone: its RETIRE, not the signal, reaches the worker
  await waitFor("the connection's end", () => kept.at.end > 0);
  expect(await server.exited()).toBe(241);
  expect(performance.now() - termAt).toBeLessThan(KEPT_HEADER_MS + 2000); // --grace is 10 s
  kept.close();
}, 20_000);

// USR2 while the old master's one worker runs a request of `seconds`; a TERM sent to the old master right after the handover, or none.
test.each([
  { name: "a request longer than --grace finishes, as a reload's old workers finish theirs", grace: 1, seconds: 2, term: false, answer: "done\n" },
  { name: "a TERM to the old master then gives it --grace, which the request fits in", grace: 5, seconds: 1, term: true, answer: "done\n" },
  { name: "a TERM to the old master then gives it --grace, past which its request is cut", grace: 1, seconds: 4, term: true, answer: "" },
])("USR2: $name; the new master serves on", async ({ grace, seconds, term, answer }) => {
  using dir = tempDir();
  const pidFile = join(dir.path, "pid");
  const args = ["-W", "1", "--grace", String(grace), "-p", `sh -c 'sleep ${seconds}; echo done'`, "-s", "0", "--pid-file", pidFile];
  await using server = await startServer(args);
  const old = server.proc.pid;
  await waitFor("the pid file", () => existsSync(pidFile));
  const ms = seconds * 1000 + 4000;
  const replying = exchange(server.target, "", { ms, halfClose: false });
  await waitFor("the program", () => workersOf(old).some((w) => childrenOf(w).length > 0));
  process.kill(old, "SIGUSR2");
  await waitFor("the handover", () => server.stderr().includes(`${old} drains and exits`));
  const successor = Number(readFileSync(pidFile, "utf8"));
  try {
    if (term) process.kill(old, "SIGTERM"); // as an operator ends the old master after an upgrade
    expect((await replying).data.toString()).toBe(answer);
    // Its own end (its stdout and stderr stay open: the new master has them), bounded: the finally must run.
    expect(await Promise.race([server.proc.exited, Bun.sleep(4000).then(() => "still running")])).not.toBe("still running");
    expect(isAlive(successor)).toBe(true);
    expect((await exchange(server.target, "", { ms, halfClose: false })).data.toString()).toBe("done\n");
  } finally {
    signalEach([successor], "SIGKILL");
  }
}, 30_000);

test("USR2 twice while the first old master still drains: the newest master serves on after that drain ends", async () => {
  using dir = tempDir();
  const pidFile = join(dir.path, "pid");
  await using server = await startServer(["-W", "1", "-p", "sh -c 'sleep 2; echo done'", "-s", "0", "--pid-file", pidFile]);
  const first = server.proc.pid;
  const master = () => (existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8")) || undefined : undefined);
  await waitFor("the pid file", () => master() === first);
  const replying = exchange(server.target, "", { ms: 10_000, halfClose: false });
  await waitFor("the program", () => workersOf(first).some((w) => childrenOf(w).length > 0));
  process.kill(first, "SIGUSR2");
  await waitFor("the first handover", () => (master() ?? first) !== first);
  const second = master()!;
  await waitFor("the second master's worker", () => workersOf(second).length === 1);
  process.kill(second, "SIGUSR2");
  await waitFor("the second handover", () => (master() ?? second) !== second);
  const third = master()!;
  try {
    await waitFor("the second master's exit", () => !isAlive(second));
    expect((await replying).data.toString()).toBe("done\n"); // the first master's drain ends with it
    expect(await Promise.race([server.proc.exited, Bun.sleep(6000).then(() => "still running")])).not.toBe("still running");
    expect((await exchange(server.target, "", { ms: 10_000, halfClose: false })).data.toString()).toBe("done\n");
    expect(server.stderr()).not.toContain("Termination signal");
    expect(isAlive(third)).toBe(true);
  } finally {
    signalEach([third], "SIGKILL");
  }
}, 30_000);
