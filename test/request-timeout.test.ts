// --request-timeout: a request (SCGI, FastCGI, or a plain -p connection)
// running longer than SECS from its program's start is ended: its whole
// process group goes (TERM, then KILL), the web server gets a 504 when no
// byte of the answer went out (else the answer stops), one line says so,
// and --status counts it. Through a real nginx for the gateways, in a pool
// (-W 2) and in the classic server (-l -f); a pool's plain -p connection
// directly. The rule's data (request/request-deadline.ts) is tested on its own.
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { isAlive, run, startServer, tempDir, waitFor, writeExecutable } from "./harness.ts";
import { noNginx, startNginx } from "./gateway-peers.ts";
import { GATEWAY_TIMEOUT, overdueLine, RequestClock, requestDue, sooner } from "../src/request/request-deadline.ts";

/** --request-timeout in these tests: short, so that a run stays bounded. */
const SECS = 1;
/** How long the 504 (or the cut) may take past SECS: the group's KILL comes a second after its TERM. */
const SLACK_MS = 2500;

/**
 * The CGIs: `hang` never answers and leaves a `sleep` in the background (the
 * group must go, not only the script); `chatty` prints for ever. Each writes
 * its pid (and the background one's) where the test reads it.
 */
function scripts(dir: string): { hang: string; chatty: string; quick: string } {
  return {
    hang: writeExecutable(join(dir, "hang.cgi"), `#!/bin/sh\nsleep 300 &\necho $! > ${dir}/bg.pid\necho $$ > ${dir}/hang.pid\nexec sleep 300\n`),
    chatty: writeExecutable(
      join(dir, "chatty.cgi"),
      `#!/bin/sh\necho $$ > ${dir}/chatty.pid\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nwhile :; do echo tick; sleep 0.05; done\n`,
    ),
    quick: writeExecutable(join(dir, "quick.cgi"), `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nquick\\n'\n`),
  };
}

/** The pid a CGI wrote to `name`, once it has. */
async function pidIn(dir: string, name: string): Promise<number> {
  const file = join(dir, name);
  await waitFor(`${name} to be written`, () => existsSync(file) && /^\d+\n$/.test(readFileSync(file, "utf8")));
  return Number(readFileSync(file, "utf8"));
}

/** The status page's JSON (--status on a UNIX socket). */
async function statusPage(path: string): Promise<Record<string, number | string>> {
  const res = await fetch("http://localhost/status?json", { unix: path });
  return (await res.json()) as Record<string, number | string>;
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
      const hangPid = await pidIn(dir.path, "hang.pid");
      const bgPid = await pidIn(dir.path, "bg.pid");
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
      const chattyPid = await pidIn(dir.path, "chatty.pid");
      await waitFor("the printing CGI to end", () => !isAlive(chattyPid), SLACK_MS);
      const cutLine = new RegExp(`${mode.protocol}: request-timeout: pid ${chattyPid} ${cgi.chatty} GET /chatty\\.cgi ran \\d+\\.\\d s, ended \\(answer cut\\)`);
      await waitFor("the cut line", () => cutLine.test(server.stderr()));

      // The gateway serves on: a quick request is answered.
      const quick = await nginx.fetch("/quick.cgi");
      expect(quick.status).toBe(200);
      expect(await quick.text()).toBe("quick\n");

      if (pool) await waitFor("/status to count 2 request timeouts", async () => (await statusPage(status))["request timeouts"] === 2);
    }, 30_000);
  }
});

describe("--request-timeout on a pool's plain -p connection", () => {
  test("the program and its group are ended, nothing is written, the connection closes; the line and /status say it", async () => {
    using dir = tempDir();
    const program = writeExecutable(join(dir.path, "linger"), `#!/bin/sh\nsleep 300 &\necho $! > ${dir.path}/bg.pid\necho $$ > ${dir.path}/prog.pid\nexec sleep 300\n`);
    const status = join(dir.path, "status.sock");
    await using server = await startServer(["-W", "1", "--request-timeout", String(SECS), "--status", status, "-p", program, "-s", join(dir.path, "plain.sock")]);
    let received = "";
    let closedAt = 0;
    const started = Date.now();
    const client = await Bun.connect({
      unix: String(server.target),
      socket: { data: (_s, d) => void (received += d.toString()), close: () => void (closedAt = Date.now()) },
    });
    try {
      const pid = await pidIn(dir.path, "prog.pid");
      const bg = await pidIn(dir.path, "bg.pid");
      await waitFor("the connection to close", () => closedAt > 0, SECS * 1000 + SLACK_MS);
      expect(closedAt - started).toBeGreaterThanOrEqual(SECS * 1000 - 50);
      expect(received).toBe("");
      await waitFor("the program and its background sleep to end", () => !isAlive(pid) && !isAlive(bg), SLACK_MS);
      const line = new RegExp(`request-timeout: pid ${pid} ${program} ran \\d+\\.\\d s, ended\\n`);
      await waitFor("the request-timeout line", () => line.test(server.stderr()));
      expect(server.stderr()).not.toMatch(/(scgi|fastcgi): request-timeout/);
      await waitFor("/status to count it", async () => (await statusPage(status))["request timeouts"] === 1);
      const metrics = await (await fetch("http://localhost/status?openmetrics", { unix: status })).text();
      expect(metrics).toContain("# TYPE socket_request_timeouts_total counter\nsocket_request_timeouts_total 1\n");
    } finally {
      client.terminate();
    }
  }, 20_000);
});

describe("--request-timeout on the command line", () => {
  test("a bad value is one line and exit 15; without a program to end it is refused", async () => {
    const bad = await run(["--request-timeout", "soon", "-s", "-p", "cat", "0"]);
    expect(bad.status).toBe(15);
    expect(bad.stderr).toBe("socket: --request-timeout wants a number from 0.001 to 86400, not 'soon'\n");
    const client = await run(["--request-timeout", "5", "127.0.0.1", "9"]);
    expect(client.status).toBe(15);
    expect(client.stderr).toStartWith("socket: --request-timeout needs -s and -p (or --scgi, --fastcgi)\n");
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
});
