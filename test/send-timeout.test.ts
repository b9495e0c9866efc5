// --send-timeout: a gateway's answer the web server takes no byte of for
// SECS ends the request (nginx's send_timeout): the connection is dropped,
// the CGI's group goes (TERM, then KILL), one line says so, and the worker
// is free for the next request. A client that sends its request and never
// reads a large answer, over real UNIX sockets, in a pool of one worker
// (-W 1: a second request is served only once the worker is free) and in
// the classic server (-l -f), for both protocols. A CGI silent for longer
// than the limit before it answers is still served: only waiting output
// counts. The rule's data (request/send-deadline.ts) is tested on its own.
import { describe, expect, test } from "bun:test";
import { realpathSync } from "node:fs";
import { join } from "node:path";
import { isAlive, pidWritten, startServer, statusJson, tempDir, waitFor, writeExecutable, type Target } from "./harness.ts";
import { converse, fcgiRequest, parseRecords, peerOutput, pythonPeer, scgiRequest } from "./gateway-peers.ts";
import { stalledLine } from "../src/request/send-deadline.ts";
import { SendClock } from "../src/request/fastcgi-engine.ts";
import { FastCgiResponder } from "../src/request/fastcgi-responder.ts";
import { encodePairs, encodeRecord, TYPE } from "../src/request/fastcgi-records.ts";
import type { ResponderEffects } from "../src/request/fastcgi-engine.ts";
import { parseCommandLine } from "../src/cli/parse.ts";

/** --send-timeout in these tests. */
const SECS = 1;

const MODES = [
  { name: "--fastcgi -W 1", protocol: "fastcgi", args: ["--fastcgi", "-W", "1"] },
  { name: "--scgi -W 1", protocol: "scgi", args: ["--scgi", "-W", "1"] },
  { name: "--fastcgi -l -f", protocol: "fastcgi", args: ["--fastcgi", "-l", "-f"] },
  { name: "--scgi -l -f", protocol: "scgi", args: ["--scgi", "-l", "-f"] },
] as const;

/** The CGIs: `big` writes 50 MB at once (its pid first); `late` is silent past the limit, then answers; `quick` answers. */
function scripts(dir: string): { big: string; late: string; quick: string } {
  const header = "printf 'Content-Type: text/plain\\r\\n\\r\\n'";
  return {
    big: writeExecutable(join(dir, "big.cgi"), `#!/bin/sh\necho $$ > ${dir}/big.pid\n${header}\nexec head -c 50000000 /dev/zero\n`),
    late: writeExecutable(join(dir, "late.cgi"), `#!/bin/sh\nsleep ${SECS * 2}\n${header}\necho late\n`),
    quick: writeExecutable(join(dir, "quick.cgi"), `#!/bin/sh\n${header}\necho quick\n`),
  };
}

/** A request for `script` in the protocol's own bytes, as a web server sends it. */
function request(protocol: "scgi" | "fastcgi", script: string, uri: string): Uint8Array {
  const vars: [string, string][] = [
    ["CONTENT_LENGTH", "0"],
    ["REQUEST_METHOD", "GET"],
    ["REQUEST_URI", uri],
    ["SCRIPT_NAME", uri],
    ["SCRIPT_FILENAME", script],
  ];
  // SCGI's CONTENT_LENGTH first, then SCGI.
  return protocol === "scgi" ? scgiRequest([vars[0], ["SCGI", "1"], ...vars.slice(1)]) : fcgiRequest(1, vars);
}

/** The answer's text: SCGI's bytes, FastCGI's STDOUT records. */
const answerOf = (protocol: "scgi" | "fastcgi", data: Buffer) => (protocol === "scgi" ? data.toString() : parseRecords(data).stdout);

/**
 * A web server that sends its request and never reads (its receive buffer
 * as small as the kernel allows): a python3 process, ended when disposed.
 */
async function stalledClient(target: Target, bytes: Uint8Array): Promise<AsyncDisposable> {
  const proc = pythonPeer(target, bytes, ["print('sent', flush=True)", "time.sleep(60)"], { smallBuffer: true });
  const first = await proc.stdout.getReader().read();
  expect(new TextDecoder().decode(first.value)).toContain("sent");
  return {
    [Symbol.asyncDispose]: async () => {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}

/** A web server that reads slowly but steadily (64 KiB every 100 ms) to the end: how many bytes came. */
async function slowReader(target: Target, bytes: Uint8Array): Promise<number> {
  const reading = ["total = 0", "while True:", "    chunk = s.recv(65536)", "    if not chunk: break", "    total += len(chunk)", "    time.sleep(0.1)", "print(total, flush=True)"];
  return Number((await peerOutput(pythonPeer(target, bytes, reading), 30_000)).toString());
}

/** One request on its own connection, read to the end: the answer's text. */
async function fetchOne(target: Target, protocol: "scgi" | "fastcgi", script: string, uri: string): Promise<string> {
  const client = await converse(target);
  client.send(request(protocol, script, uri));
  await client.closed(10000);
  return answerOf(protocol, client.data());
}

describe("--send-timeout", () => {
  for (const mode of MODES) {
    const pool = (mode.args as readonly string[]).includes("-W");
    test(`${mode.name}: a web server that never reads a 50 MB answer: the CGI goes, ${pool && mode.protocol === "scgi" ? "its write failing" : "the line says it"}, the next request is served`, async () => {
      using tmp = tempDir();
      const dir = realpathSync(tmp.path);
      const cgi = scripts(dir);
      // Counted with the request timeouts where socket sees it end: not SCGI's in a pool, whose CGI's own write fails.
      const counted = pool && mode.protocol === "fastcgi";
      const status = join(dir, "status.sock");
      const args = [...mode.args, "--cgi-root", dir, "--send-timeout", String(SECS), ...(counted ? ["--status", status] : [])];
      await using server = await startServer([...args, "-s", join(dir, "app.sock")]);

      await using _stalled = await stalledClient(server.target, request(mode.protocol, cgi.big, "/big.cgi"));
      const pid = await pidWritten(dir, "big.pid");
      // The limit, then TERM (head dies of it): well within 10 s.
      await waitFor("the CGI that writes to nobody to end", () => !isAlive(pid), 10000);
      if (!(pool && mode.protocol === "scgi")) {
        // SCGI in a pool: the CGI writes to the connection itself; the kernel fails its write (SO_SNDTIMEO), socket says nothing.
        const line = new RegExp(`${mode.protocol}: send-timeout: pid ${pid} ${cgi.big} GET /big\\.cgi: the web server took none of the answer for (\\d+\\.\\d) s: connection dropped`);
        await waitFor("the send-timeout line", () => line.test(server.stderr()));
        expect(Number(server.stderr().match(line)![1])).toBeGreaterThanOrEqual(SECS);
      }
      if (counted) await waitFor("/status to count it", async () => (await statusJson(status))["request timeouts"] === 1);
      // The worker (the only one under -W 1) serves the next request.
      expect(await fetchOne(server.target, mode.protocol, cgi.quick, "/quick.cgi")).toContain("quick\n");
    });

    test(`${mode.name}: a web server that reads 1.2 MB slowly but steadily gets it all: each byte taken starts the limit again`, async () => {
      using tmp = tempDir();
      const dir = realpathSync(tmp.path);
      // About 1.9 s of reading at 64 KiB every 0.1 s: past the limit of 1 s, each take ten times within it.
      const cgi = writeExecutable(join(dir, "three.cgi"), `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nexec head -c 1200000 /dev/zero\n`);
      await using server = await startServer([...mode.args, "--cgi-root", dir, "--send-timeout", "1", "-s", join(dir, "app.sock")]);
      const got = await slowReader(server.target, request(mode.protocol, cgi, "/three.cgi"));
      expect(got).toBeGreaterThan(1200000); // the answer, and SCGI's header or FastCGI's framing
      expect(server.stderr()).not.toContain("send-timeout");
    });

    if (!pool && mode.protocol === "fastcgi") {
      test(`${mode.name}: a request --request-timeout ended, its CGI deaf to TERM, its answer stalled: one line, not a send-timeout's as well`, async () => {
        using tmp = tempDir();
        const dir = realpathSync(tmp.path);
        // Ignores TERM: it lives until the KILL (1 s after the request-timeout's TERM at 1 s), past the send-timeout at 1.5 s.
        const cgi = writeExecutable(join(dir, "deaf.cgi"), `#!/bin/sh\necho $$ > ${dir}/deaf.pid\ntrap "" TERM\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nhead -c 50000000 /dev/zero\nsleep 30\n`);
        await using server = await startServer([...mode.args, "--cgi-root", dir, "--request-timeout", "1", "--send-timeout", "1.5", "-s", join(dir, "app.sock")]);
        await using _stalled = await stalledClient(server.target, request(mode.protocol, cgi, "/deaf.cgi"));
        const pid = await pidWritten(dir, "deaf.pid");
        await waitFor("the request-timeout line", () => server.stderr().includes(`request-timeout: pid ${pid}`));
        await waitFor("the CGI's KILL", () => !isAlive(pid), 10000);
        expect(server.stderr()).not.toContain("send-timeout");
      });
    }

    test(`${mode.name}: a CGI silent for twice the limit before it answers is served`, async () => {
      using tmp = tempDir();
      const dir = realpathSync(tmp.path);
      const cgi = scripts(dir);
      await using server = await startServer([...mode.args, "--cgi-root", dir, "--send-timeout", String(SECS), "-s", join(dir, "app.sock")]);
      expect(await fetchOne(server.target, mode.protocol, cgi.late, "/late.cgi")).toContain("late\n");
      expect(server.stderr()).not.toContain("send-timeout");
    });
  }
});

describe("--send-timeout on the command line", () => {
  const parsed = (args: string[]) => {
    const result = parseCommandLine(args, false);
    return "run" in result ? result.run.sendTimeoutMs : result;
  };

  test("a gateway's default is 60 s, 0 turns it off, a fraction is taken", () => {
    expect(parsed(["--fastcgi", "-s", "-p", "/bin/true", "9000"])).toBe(60000);
    expect(parsed(["--scgi", "-s", "-p", "/bin/true", "--send-timeout", "0", "9000"])).toBeUndefined();
    expect(parsed(["--scgi", "-s", "-p", "/bin/true", "--send-timeout", "2.5", "9000"])).toBe(2500);
    expect(parsed(["-s", "-p", "/bin/true", "9000"])).toBeUndefined();
  });

  test("a bad value, or no gateway, is one line and the usage status", () => {
    const bad = parseCommandLine(["--fastcgi", "-s", "-p", "/bin/true", "--send-timeout", "soon", "9000"], false);
    expect(bad).toMatchObject({ exit: 15, stderr: "socket: --send-timeout wants a number from 0 to 86400, not 'soon'\n" });
    const plain = parseCommandLine(["-s", "-p", "/bin/true", "--send-timeout", "5", "9000"], false);
    expect(plain).toMatchObject({ exit: 15 });
    expect("stderr" in plain ? plain.stderr : "").toContain("--send-timeout needs --scgi or --fastcgi");
  });
});

/** A pool's FastCGI responder at time 0 with a request running (no body), and what it asked of its engine. */
function runningRequest(timeouts: { requestTimeoutMs: number | undefined; sendTimeoutMs: number }) {
  const calls: string[] = [];
  let counted = 0;
  const effects: ResponderEffects = {
    sending: new SendClock(),
    send: () => {},
    queued: () => 0,
    start: () => undefined,
    writeBody: () => {},
    endBody: () => {},
    spoolFile: { write: () => true, close() {} },
    stopProgram: () => void calls.push("stopProgram"),
    program: () => ({ pid: 7, script: "/srv/big.cgi", request: "GET /big.cgi", counted: () => void counted++ }),
    end: () => void calls.push("end"),
    drop: (stop) => void calls.push(`drop ${stop === true ? "stop" : "kill"}`),
  };
  const options = { verbose: false, timeoutMs: undefined, ...timeouts, passEnv: [], maxBody: 1000, cgiStderr: "web" as const, pool: undefined };
  const fcgi = new FastCgiResponder({ options, maxConns: 1, pool: true }, effects, 0);
  const begin = encodeRecord(TYPE.BEGIN_REQUEST, 1, new Uint8Array([0, 1, 0, 0, 0, 0, 0, 0]));
  fcgi.input(Buffer.concat([begin, encodeRecord(TYPE.PARAMS, 1, encodePairs([["CONTENT_LENGTH", "0"]])), encodeRecord(TYPE.PARAMS, 1), encodeRecord(TYPE.STDIN, 1)]), 0);
  return { fcgi, effects, calls, counted: () => counted };
}

describe("the send clock and the FastCGI responder's send deadline", () => {
  test("only waiting output counts, and a byte taken starts it again", () => {
    const clock = new SendClock();
    expect(clock.due(1000)).toBe(Infinity);
    clock.blocked(100);
    clock.blocked(500); // still waiting since 100
    expect(clock.due(1000)).toBe(1100);
    expect(clock.waited(1300)).toBe(1200);
    expect(clock.due(undefined)).toBe(Infinity);
    clock.took();
    expect(clock.due(1000)).toBe(Infinity);
    clock.blocked(2000);
    expect(clock.due(1000)).toBe(3000);
  });

  test("the line names the CGI and its request, and a client's bytes cannot make a line of their own", () => {
    const program = { pid: 42, script: "/srv/big.cgi", request: "GET /big\nfake" };
    expect(stalledLine({ protocol: "fastcgi", program, waitedMs: 60000 })).toBe(
      "fastcgi: send-timeout: pid 42 /srv/big.cgi GET /big?fake: the web server took none of the answer for 60.0 s: connection dropped",
    );
    expect(stalledLine({ protocol: "scgi", program: undefined, waitedMs: 1000 })).toBe("scgi: send-timeout: the web server took none of the answer for 1.0 s: connection dropped");
  });

  test("a running request whose output waits past the limit: the program is told to stop and the connection dropped, not killed", () => {
    const { fcgi, effects, calls, counted } = runningRequest({ requestTimeoutMs: undefined, sendTimeoutMs: 1000 });
    expect(fcgi.phase).toBe("running");
    expect(fcgi.deadline()).toBeUndefined(); // silent: nothing waits
    effects.sending.blocked(5000);
    expect(fcgi.deadline()).toMatchObject({ at: 6000, stalled: true });
    fcgi.expire(5999);
    expect(calls).toEqual([]);
    fcgi.expire(6000);
    expect(calls).toEqual(["stopProgram", "drop stop"]);
    expect(counted()).toBe(1);
    expect(fcgi.over).toBe(true);
  });

  test("a request --request-timeout ended whose output still waits: the send-timeout drops the connection, without a second line or count", () => {
    const { fcgi, effects, calls, counted } = runningRequest({ requestTimeoutMs: 1000, sendTimeoutMs: 1500 });
    effects.sending.blocked(100); // the web server stops taking the answer
    fcgi.expire(1000); // --request-timeout: its line, its count, the program told to stop (it has not exited yet)
    expect([calls, counted()]).toEqual([["stopProgram"], 1]);
    fcgi.expire(1600); // --send-timeout: the connection goes, the request is not counted again
    expect([calls, counted()]).toEqual([["stopProgram", "stopProgram", "drop stop"], 1]);
    expect(fcgi.over).toBe(true);
  });
});
