// --request-timeout: a request (SCGI, FastCGI, or a plain -p connection)
// running longer than SECS from its program's start is ended: its whole
// process group goes (TERM, then KILL), the web server gets a 504 when no
// byte of the answer went out (else the answer stops), one line says so,
// and --status counts it. Through a real nginx for the gateways, in a pool
// (-W 2) and in the classic server (-l -f); a pool's plain -p connection
// directly. The rule's data (request/request-deadline.ts) is tested on its own.
import { describe, expect, test } from "bun:test";
import { realpathSync } from "node:fs";
import { join } from "node:path";
import { isAlive, pidWritten, run, startServer, statusJson, tempDir, waitFor, writeExecutable } from "./harness.ts";
import { begin, converse, endRequests, fcgiRequest, noNginx, pairs, parseRecords, record, startNginx } from "./gateway-peers.ts";
import { GATEWAY_TIMEOUT, overdueLine } from "../src/request/request-deadline.ts";
import { requestText } from "../src/request/cgi.ts";
import { RequestClock, requestDue, sooner } from "../src/request/fastcgi-engine.ts";
import { FastCgiResponder } from "../src/request/fastcgi-responder.ts";
import { encodePairs, encodeRecord, RecordReader, STATUS, TYPE, type FcgiRecord } from "../src/request/fastcgi-records.ts";
import type { ResponderEffects } from "../src/request/fastcgi-engine.ts";
import { SendClock } from "../src/request/fastcgi-engine.ts";
import { parseCommandLine } from "../src/cli/parse.ts";

/** --request-timeout in these tests: short, so that a run stays bounded. */
const SECS = 1;
/** How long the 504 (or the cut) may take past SECS: the group's KILL comes a second after its TERM. */
const SLACK_MS = 2500;

/**
 * The CGIs: `hang` never answers and leaves a `sleep` in the background (the
 * group must go, not only the script); `chatty` prints for ever. Each writes
 * its pid (and the background one's) where the test reads it.
 */
function scripts(dir: string): { hang: string; chatty: string; quick: string; stubborn: string; reader: string } {
  return {
    hang: writeExecutable(join(dir, "hang.cgi"), `#!/bin/sh\nsleep 300 &\necho $! > ${dir}/bg.pid\necho $$ > ${dir}/hang.pid\nexec sleep 300\n`),
    chatty: writeExecutable(
      join(dir, "chatty.cgi"),
      `#!/bin/sh\necho $$ > ${dir}/chatty.pid\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nwhile :; do echo tick; sleep 0.05; done\n`,
    ),
    quick: writeExecutable(join(dir, "quick.cgi"), `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nquick\\n'\n`),
    // Reads its body for as long as it comes.
    reader: writeExecutable(join(dir, "reader.cgi"), `#!/bin/sh\necho $$ > ${dir}/reader.pid\ncat > /dev/null\n`),
    // Ignores TERM: only the KILL a second later ends it.
    stubborn: writeExecutable(join(dir, "stubborn.cgi"), `#!/bin/sh\ntrap '' TERM\necho $$ > ${dir}/stubborn.pid\nwhile :; do sleep 0.1; done\n`),
  };
}

const MODES = [
  { name: "--fastcgi -W 2", protocol: "fastcgi", args: ["--fastcgi", "-W", "2"] },
  { name: "--scgi -W 2", protocol: "scgi", args: ["--scgi", "-W", "2"] },
  { name: "--fastcgi -l -f", protocol: "fastcgi", args: ["--fastcgi", "-l", "-f"] },
  { name: "--scgi -l -f", protocol: "scgi", args: ["--scgi", "-l", "-f"] },
] as const;

describe.skipIf(noNginx)("--request-timeout through nginx", () => {
  for (const mode of MODES) {
    const pool = (mode.args as readonly string[]).includes("-W");
    test(`${mode.name}: a CGI that never answers gets 504 and its group goes; one that prints for ever is cut; the line says it${pool ? "; /status counts both" : ""}`, async () => {
      using tmp = tempDir();
      const dir = { path: realpathSync(tmp.path) };
      const cgi = scripts(dir.path);
      const status = join(dir.path, "status.sock");
      await using server = await startServer([
        ...mode.args,
        "--cgi-root",
        dir.path,
        "--request-timeout",
        String(SECS),
        ...(pool ? ["--status", status] : []),
        "-s",
        join(dir.path, "app.sock"),
      ]);
      await using nginx = await startNginx(dir.path, mode.protocol, server.target, {
        keepConn: true,
        locations: (pass) => `location / { ${pass} ${mode.protocol}_param SCRIPT_FILENAME ${dir.path}$uri; }`,
      });

      // Never answers: 504 within SECS + slack; the script and its background sleep are gone.
      const started = Date.now();
      const hung = await nginx.fetch("/hang.cgi?x=1");
      const tookMs = Date.now() - started;
      expect(hung.status).toBe(504);
      await hung.text();
      expect(tookMs).toBeGreaterThanOrEqual(SECS * 1000 - 50);
      expect(tookMs).toBeLessThan(SECS * 1000 + SLACK_MS);
      const hangPid = await pidWritten(dir.path, "hang.pid");
      const bgPid = await pidWritten(dir.path, "bg.pid");
      await waitFor("the CGI and its background sleep to end", () => !isAlive(hangPid) && !isAlive(bgPid), SLACK_MS);
      const line = new RegExp(`${mode.protocol}: request-timeout: pid ${hangPid} ${cgi.hang} GET /hang\\.cgi\\?x=1 ran (\\d+\\.\\d) s, ended \\(504 sent\\)`);
      await waitFor("the request-timeout line", () => line.test(server.stderr()));
      expect(Number(server.stderr().match(line)![1])).toBeCloseTo(SECS, 0);

      // Prints for ever: the answer had begun, so it stops (no 504) and the CGI goes.
      const cutStarted = Date.now();
      const chatty = await nginx.fetch("/chatty.cgi");
      expect(chatty.status).toBe(200);
      const body = await chatty.text().catch(() => "(cut)"); // SCGI's answer ends in a reset: nginx may cut the client's too
      expect(Date.now() - cutStarted).toBeLessThan(SECS * 1000 + SLACK_MS);
      if (body !== "(cut)") expect(body).toStartWith("tick\n");
      const chattyPid = await pidWritten(dir.path, "chatty.pid");
      await waitFor("the printing CGI to end", () => !isAlive(chattyPid), SLACK_MS);
      const cutLine = new RegExp(`${mode.protocol}: request-timeout: pid ${chattyPid} ${cgi.chatty} GET /chatty\\.cgi ran \\d+\\.\\d s, ended \\(answer cut\\)`);
      await waitFor("the cut line", () => cutLine.test(server.stderr()));

      // The gateway serves on: a quick request is answered.
      const quick = await nginx.fetch("/quick.cgi");
      expect(quick.status).toBe(200);
      expect(await quick.text()).toBe("quick\n");

      if (pool) await waitFor("/status to count 2 request timeouts", async () => (await statusJson(status))["request timeouts"] === 2);
    }, 30_000);
  }
});

describe("--request-timeout on a kept FastCGI connection", () => {
  for (const args of [["-W", "1"], ["-l", "-f"]]) {
    test(`${args.join(" ")}: the 504 and END_REQUEST, then the next request on the same connection is served; a CGI that ignores TERM gets KILL`, async () => {
      using tmp = tempDir();
      const dir = realpathSync(tmp.path);
      const cgi = scripts(dir);
      await using server = await startServer(["--fastcgi", ...args, "--cgi-root", dir, "--request-timeout", String(SECS), "-s", join(dir, "app.sock")]);
      const conn = await converse(server.target);
      try {
        const started = Date.now();
        conn.send(fcgiRequest(1, [["SCRIPT_FILENAME", cgi.hang], ["REQUEST_METHOD", "GET"], ["REQUEST_URI", "/hang.cgi"]], undefined, true));
        const first = parseRecords(await conn.until("the first END_REQUEST", (d) => endRequests(parseRecords(d)).length === 1));
        expect(Date.now() - started).toBeLessThan(SECS * 1000 + SLACK_MS);
        expect(first.stdout).toStartWith("Status: 504 Gateway Timeout\r\n");
        expect(endRequests(first)).toEqual([{ id: 1, app: expect.any(Number), protocol: 0 }]);
        conn.send(fcgiRequest(2, [["SCRIPT_FILENAME", cgi.quick], ["REQUEST_METHOD", "GET"]], undefined, true));
        const both = parseRecords(await conn.until("the second END_REQUEST", (d) => endRequests(parseRecords(d)).length === 2));
        expect(both.stdout).toEndWith("quick\n");
        expect(endRequests(both)[1]).toEqual({ id: 2, app: 0, protocol: 0 });

        const stubbornAt = Date.now();
        conn.send(fcgiRequest(3, [["SCRIPT_FILENAME", cgi.stubborn], ["REQUEST_METHOD", "GET"]], undefined, true));
        const third = parseRecords(await conn.until("the third END_REQUEST", (d) => endRequests(parseRecords(d)).length === 3));
        const tookMs = Date.now() - stubbornAt;
        expect(third.stdout).toContain("quick\nStatus: 504 Gateway Timeout\r\n");
        expect(endRequests(third)[2]).toEqual({ id: 3, app: 128 + 9, protocol: 0 }); // KILLed
        expect(tookMs).toBeGreaterThanOrEqual(2 * SECS * 1000 - 100); // its TERM ignored: the KILL a second later
        expect(isAlive(await pidWritten(dir, "stubborn.pid"))).toBe(false);
      } finally {
        conn.close();
      }
    }, 20_000);
  }
});

describe("--request-timeout while a FastCGI body still streams in", () => {
  for (const args of [["-W", "1"], ["-l", "-f"]]) {
    test(`${args.join(" ")}: bytes of the body coming all along do not hold the request past it`, async () => {
      using tmp = tempDir();
      const dir = realpathSync(tmp.path);
      const cgi = scripts(dir);
      await using server = await startServer(["--fastcgi", ...args, "--cgi-root", dir, "--request-timeout", String(SECS), "-s", join(dir, "app.sock")]);
      const conn = await converse(server.target);
      let streaming = true;
      try {
        const started = Date.now();
        conn.send(Buffer.concat([begin(1), record(4, 1, pairs([["SCRIPT_FILENAME", cgi.reader], ["CONTENT_LENGTH", "10000000"]])), record(4, 1)]));
        const chunk = record(5, 1, new Uint8Array(1000));
        void (async () => {
          for (let sent = 0; streaming && sent < 300; sent++) {
            conn.send(chunk);
            await Bun.sleep(10);
          }
        })();
        const answer = parseRecords(await conn.until("the END_REQUEST", (d) => endRequests(parseRecords(d)).length === 1));
        expect(Date.now() - started).toBeLessThan(SECS * 1000 + SLACK_MS);
        expect(answer.stdout).toStartWith("Status: 504 Gateway Timeout\r\n");
        await waitFor("the reading CGI to end", async () => !isAlive(await pidWritten(dir, "reader.pid")), SLACK_MS);
      } finally {
        streaming = false;
        conn.close();
      }
    }, 20_000);
  }
});

describe("--request-timeout on a plain -p connection", () => {
  for (const args of [["-W", "1"], ["-l", "-f"]]) {
    const pool = args[0] === "-W";
    test(`${args.join(" ")}: the program and its group are ended (KILL for what ignores TERM), nothing is written, the connection closes; the line${pool ? " and /status say" : " says"} it`, async () => {
      using dir = tempDir();
      const program = writeExecutable(join(dir.path, "linger"), `#!/bin/sh\n(trap '' TERM; exec sleep 300) &\necho $! > ${dir.path}/bg.pid\necho $$ > ${dir.path}/prog.pid\nexec sleep 300\n`);
      const status = join(dir.path, "status.sock");
      await using server = await startServer([...args, "--request-timeout", String(SECS), ...(pool ? ["--status", status] : []), "-p", program, "-s", join(dir.path, "plain.sock")]);
      let received = "";
      let closedAt = 0;
      const started = Date.now();
      const client = await Bun.connect({
        unix: String(server.target),
        socket: { data: (_s, d) => void (received += d.toString()), close: () => void (closedAt = Date.now()) },
      });
      try {
        const pid = await pidWritten(dir.path, "prog.pid");
        const bg = await pidWritten(dir.path, "bg.pid");
        await waitFor("the connection to close", () => closedAt > 0, SECS * 1000 + SLACK_MS);
        expect(closedAt - started).toBeGreaterThanOrEqual(SECS * 1000 - 50);
        expect(received).toBe("");
        await waitFor("the program and its background sleep to end", () => !isAlive(pid) && !isAlive(bg), SLACK_MS);
        const line = new RegExp(`request-timeout: pid ${pid} ${program} ran \\d+\\.\\d s, ended\\n`);
        await waitFor("the request-timeout line", () => line.test(server.stderr()));
        expect(server.stderr()).not.toMatch(/(scgi|fastcgi): request-timeout/);
        if (!pool) return;
        await waitFor("/status to count it", async () => (await statusJson(status))["request timeouts"] === 1);
        const metrics = await (await fetch("http://localhost/status?openmetrics", { unix: status })).text();
        expect(metrics).toContain("# TYPE socket_request_timeouts_total counter\nsocket_request_timeouts_total 1\n");
      } finally {
        client.terminate();
      }
    }, 20_000);
  }
});

describe("--request-timeout on the command line", () => {
  test("a bad value is one line and exit 15; without a program to end, or with --prestart, it is refused", async () => {
    const bad = await run(["--request-timeout", "soon", "-s", "-p", "cat", "0"]);
    expect(bad.status).toBe(15);
    expect(bad.stderr).toBe("socket: --request-timeout wants a number from 0.001 to 86400, not 'soon'\n");
    const client = await run(["--request-timeout", "5", "127.0.0.1", "9"]);
    expect(client.status).toBe(15);
    expect(client.stderr).toStartWith("socket: --request-timeout needs -s and -p (or --scgi, --fastcgi)\n");
    const prestart = await run(["--request-timeout", "5", "-W", "2", "--prestart", "-s", "-p", "cat", "0"]);
    expect(prestart.status).toBe(15);
    expect(prestart.stderr).toStartWith("socket: --request-timeout cannot apply to --prestart: its program starts before its connection arrives\n");
  });
});

describe("--request-timeout parsed", () => {
  test("SECS into milliseconds for a gateway, a pool's -p and -l -f's; absent: none", () => {
    const parsed = (...args: string[]) => {
      const result = parseCommandLine(args, false);
      if (!("run" in result)) throw new Error(result.stderr);
      return result.run.requestTimeoutMs;
    };
    expect(parsed("--request-timeout", "2.5", "--fastcgi", "-W", "2", "-s", "-p", "/bin/cat", "0")).toBe(2500);
    expect(parsed("--request-timeout", "30", "--scgi", "-l", "-f", "-s", "-p", "/bin/cat", "0")).toBe(30_000);
    expect(parsed("--request-timeout", "0.5", "-W", "2", "-s", "-p", "cat", "0")).toBe(500);
    expect(parsed("-W", "2", "-s", "-p", "cat", "0")).toBeUndefined();
  });
});

describe("the rule (request/request-deadline.ts)", () => {
  test("due from the program's start, not restarted; none without the option or before a start", () => {
    expect(requestDue(1000, 30_000)).toBe(31_000);
    expect(requestDue(1000, undefined)).toBe(Infinity);
    expect(requestDue(undefined, 30_000)).toBe(Infinity);
    const clock = new RequestClock();
    expect(clock.deadline(500)).toBeUndefined();
    clock.start(100);
    expect(clock.deadline(500)).toEqual({ at: 600, why: "request-timeout", overdue: true });
    expect(clock.end(700)).toBe(600);
    expect(clock.cut).toBe(true);
    expect(clock.deadline(500)).toBeUndefined(); // ended once: not again
    clock.start(1000);
    expect(clock.cut).toBe(false);
    expect(clock.answered).toBe(false);
  });

  test("the sooner deadline wins; at a tie the first (the connection's own)", () => {
    const idle = { at: 5, why: "connection timed out" };
    const overdue = { at: 5, why: "request-timeout", overdue: true as const };
    expect(sooner(idle, overdue)).toBe(idle);
    expect(sooner({ at: 6, why: "x" }, overdue)).toBe(overdue);
    expect(sooner(undefined, overdue)).toBe(overdue);
    expect(sooner(idle, undefined)).toBe(idle);
  });

  test("the line names the pid, the script, the request and how long it ran; a client's bytes stay on it", () => {
    const facts = { protocol: "fastcgi" as const, pid: 1234, script: "/srv/app.cgi", request: "GET /app.cgi?x=1", ranMs: 30_000, answered: false };
    expect(overdueLine(facts)).toBe("fastcgi: request-timeout: pid 1234 /srv/app.cgi GET /app.cgi?x=1 ran 30.0 s, ended (504 sent)");
    expect(overdueLine({ ...facts, protocol: "scgi", answered: true, ranMs: 1049 })).toBe("scgi: request-timeout: pid 1234 /srv/app.cgi GET /app.cgi?x=1 ran 1.0 s, ended (answer cut)");
    expect(overdueLine({ ...facts, protocol: undefined, request: undefined, answered: undefined })).toBe("request-timeout: pid 1234 /srv/app.cgi ran 30.0 s, ended");
    expect(overdueLine({ ...facts, request: "GET /\nfake line" })).toContain("GET /?fake line");
    expect(new TextDecoder().decode(GATEWAY_TIMEOUT)).toStartWith("Status: 504 Gateway Timeout\r\n");
  });

  test("the request as the line names it: its method and URI, no empty word when either is missing", () => {
    const env = (...own: [string, string][]) => ({ inherited: {}, own });
    expect(requestText(env(["REQUEST_METHOD", "GET"], ["REQUEST_URI", "/a?b"], ["SCRIPT_NAME", "/a"]))).toBe("GET /a?b");
    expect(requestText(env(["REQUEST_METHOD", "GET"], ["SCRIPT_NAME", "/a"]))).toBe("GET /a");
    expect(requestText(env(["REQUEST_METHOD", "GET"]))).toBe("GET");
    expect(requestText(env(["REQUEST_URI", "/a"]))).toBe("/a");
    expect(requestText(env())).toBe("");
  });
});

/** A FastCGI responder at time 0 under --request-timeout 1 s (and --timeout when given), with what it told its engine. */
function responder(timeoutMs?: number) {
  const calls: string[] = [];
  const sent: FcgiRecord[] = [];
  const reader = new RecordReader();
  const effects: ResponderEffects = {
    sending: new SendClock(),
    send: (bytes) => {
      const records = reader.push(bytes);
      if ("error" in records) throw new Error(records.error);
      sent.push(...records);
    },
    queued: () => 0,
    start: () => void calls.push("start"),
    writeBody: () => void calls.push("writeBody"),
    endBody: (drop) => void calls.push(`endBody ${drop}`),
    spoolFile: { write: () => true, close() {} },
    stopProgram: () => void calls.push("stopProgram"),
    program: () => ({ pid: 4321, script: "/srv/app.cgi", request: "GET /app.cgi" }),
    end: () => void calls.push("end"),
    drop: () => void calls.push("drop"),
  };
  const options = { verbose: false, timeoutMs, requestTimeoutMs: 1000, sendTimeoutMs: undefined, passEnv: [], maxBody: 1000, cgiStderr: "web" as const, pool: undefined };
  const fcgi = new FastCgiResponder({ options, maxConns: 4, pool: true }, effects, 0);
  const begin = encodeRecord(TYPE.BEGIN_REQUEST, 1, new Uint8Array([0, 1, 1, 0, 0, 0, 0, 0])); // the responder, FCGI_KEEP_CONN
  const params = Buffer.concat([encodeRecord(TYPE.PARAMS, 1, encodePairs([["CONTENT_LENGTH", "3"]])), encodeRecord(TYPE.PARAMS, 1)]);
  const text = (r: FcgiRecord) => new TextDecoder().decode(r.content);
  return { fcgi, calls, sent, text, header: Buffer.concat([begin, params]) };
}

describe("the FastCGI responder under --request-timeout", () => {
  test("due a second after the program's start, bytes moving or not; at it: the program stopped, its stdin ended, a 504, then END_REQUEST and the connection kept", () => {
    const { fcgi, calls, sent, text, header } = responder();
    fcgi.input(header, 100); // the program starts at 100, its body still to come
    expect(fcgi.deadline()).toEqual({ at: 1100, why: "request-timeout", overdue: true });
    fcgi.moved(900); // moving bytes do not restart it
    fcgi.input(encodeRecord(TYPE.STDIN, 1, new TextEncoder().encode("abc")), 950);
    expect(fcgi.deadline()!.at).toBe(1100);
    fcgi.expire(1099); // not yet
    expect(calls).toEqual(["start", "writeBody"]);
    fcgi.expire(1100);
    expect(calls).toEqual(["start", "writeBody", "stopProgram", "endBody true"]);
    expect(fcgi.clock.cut).toBe(true);
    expect(fcgi.bodyEnded).toBe(true);
    expect(sent.map((r) => r.type)).toEqual([TYPE.STDOUT]);
    expect(text(sent[0])).toStartWith("Status: 504 Gateway Timeout\r\n");
    expect(fcgi.deadline()).toBeUndefined(); // ended once: the program's exit ends the request
    fcgi.exited(143, 1300);
    expect(sent.map((r) => r.type)).toEqual([TYPE.STDOUT, TYPE.STDOUT, TYPE.END_REQUEST]);
    expect(sent[2].content[4]).toBe(STATUS.REQUEST_COMPLETE);
    expect(fcgi.ending).toBe(false); // kept: the next request may follow
    fcgi.input(header, 1400);
    expect(fcgi.clock.cut).toBe(false);
    expect(fcgi.deadline()!.at).toBe(2400);
  });

  test("once a byte of the answer went out there is no 504: the answer stops and the request ends", () => {
    const { fcgi, sent, header } = responder();
    fcgi.input(header, 0);
    fcgi.clock.answering();
    fcgi.expire(1000);
    expect(sent).toEqual([]);
    fcgi.exited(143, 1100);
    expect(sent.map((r) => r.type)).toEqual([TYPE.STDOUT, TYPE.END_REQUEST]);
  });

  test("--timeout sooner than it drops the connection as before; later, the request deadline comes first, and the request it ended is not cut off by --timeout", () => {
    const idle = responder(300);
    idle.fcgi.input(Buffer.concat([idle.header, encodeRecord(TYPE.STDIN, 1, new TextEncoder().encode("abc")), encodeRecord(TYPE.STDIN, 1)]), 0);
    expect(idle.fcgi.deadline()).toEqual({ at: 300, why: "connection timed out" });
    idle.fcgi.expire(300);
    expect(idle.calls.at(-1)).toBe("drop");
    // --timeout later than it: once it has ended the request, the program's exit ends it (END_REQUEST), not --timeout's drop.
    const both = responder(1500);
    both.fcgi.input(Buffer.concat([both.header, encodeRecord(TYPE.STDIN, 1, new TextEncoder().encode("abc")), encodeRecord(TYPE.STDIN, 1)]), 0);
    both.fcgi.expire(1000);
    expect(both.fcgi.deadline()).toBeUndefined(); // a TERM-ignoring program: its KILL comes at 2000, past --timeout's 1500
    both.fcgi.exited(137, 2000);
    expect(both.calls).not.toContain("drop");
    expect(both.sent.map((r) => r.type)).toEqual([TYPE.STDOUT, TYPE.STDOUT, TYPE.END_REQUEST]);
    const long = responder(5000);
    long.fcgi.input(Buffer.concat([long.header, encodeRecord(TYPE.STDIN, 1, new TextEncoder().encode("abc")), encodeRecord(TYPE.STDIN, 1)]), 0);
    expect(long.fcgi.deadline()).toEqual({ at: 1000, why: "request-timeout", overdue: true });
  });
});
