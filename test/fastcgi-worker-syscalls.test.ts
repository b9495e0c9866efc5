// What a pool worker's FastCGI request costs in system calls (docs/DESIGN.md,
// "What a FastCGI request costs"): the worker reads a pipe, or asks how much
// it holds, only when poll(2) has said it has something; it never polls a
// pipe without waiting just to see whether it has ended; a GET's stdout pipe
// is not grown (only a body that streams in makes its output wait there);
// and the program's exit is read from its pidfd, not peeked at with
// waitid(WNOWAIT). Watched with strace on the worker's main thread.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { exchange, startServer, tempDir, waitFor, workersOf, writeExecutable } from "./harness.ts";
import { endRequests, fcgiGet, fcgiRequest, parseRecords } from "./gateway-peers.ts";

const STRACE = Bun.which("strace");
const REQUESTS = 20;


/** The worker's main thread's system calls while `during` runs, one line each, descriptors named (-y). */
async function traced(pid: number, during: () => Promise<void>): Promise<string[]> {
  const strace = Bun.spawn([STRACE!, "-y", "-qq", "-p", String(pid)], { stderr: "pipe" });
  const log = new Response(strace.stderr).text();
  try {
    await Bun.sleep(300); // attached (strace has no readiness signal)
    await during();
  } finally {
    strace.kill("SIGINT");
  }
  return (await log).split("\n");
}

describe.skipIf(!STRACE)("FastCGI -W 1: a GET's system calls in the worker", () => {
  test("no read or FIONREAD of a pipe poll has not named, no zero-timeout poll, no WNOWAIT, no grown pipe", async () => {
    using dir = tempDir();
    const cgi = writeExecutable(join(dir.path, "hello.cgi"), "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhello\\n'\necho note >&2\n");
    await using server = await startServer(["--fastcgi", "-W", "1", "-p", cgi, "-s", "0"]);
    await waitFor("the worker", () => workersOf(server.proc.pid).length === 1);
    const [worker] = workersOf(server.proc.pid);
    const port = server.target as number;
    await fcgiGet(port); // what a worker loads once is loaded
    const answers: Buffer[] = [];
    const lines = await traced(worker, async () => {
      for (let i = 0; i < REQUESTS; i++) answers.push(await fcgiGet(port));
    });
    for (const answer of answers) {
      const parsed = parseRecords(answer);
      expect(parsed.stdout).toBe("Content-Type: text/plain\r\n\r\nhello\n");
      expect(parsed.stderr).toBe("note\n");
      expect(endRequests(parsed)).toEqual([{ id: 1, app: 0, protocol: 0 }]);
    }
    const calls = (pattern: RegExp) => lines.filter((line) => pattern.test(line));
    expect(calls(/^accept4\(/).length).toBe(REQUESTS);
    // A pipe is read only when poll said it has bytes or its end.
    expect(calls(/^read\(\d+<pipe:.*= -1 EAGAIN/)).toEqual([]);
    expect(calls(/^poll\(.*\], \d+, 0\)/)).toEqual([]);
    expect(calls(/WNOWAIT/)).toEqual([]);
    expect(calls(/F_SETPIPE_SZ/)).toEqual([]);
    // FIONREAD sizes a record of stdout; at the exit both pipes may be asked what they still hold.
    expect(calls(/^ioctl\(.*FIONREAD/).length).toBeLessThanOrEqual(2 * REQUESTS);
  }, 30000);

  test("a CGI that writes nothing on stderr: its stderr pipe is neither read nor asked, only stdout's size is", async () => {
    using dir = tempDir();
    const cgi = writeExecutable(join(dir.path, "quiet.cgi"), "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhello\\n'\n");
    await using server = await startServer(["--fastcgi", "-W", "1", "-p", cgi, "-s", "0"]);
    await waitFor("the worker", () => workersOf(server.proc.pid).length === 1);
    const [worker] = workersOf(server.proc.pid);
    const port = server.target as number;
    await fcgiGet(port);
    const answers: Buffer[] = [];
    const lines = await traced(worker, async () => {
      for (let i = 0; i < REQUESTS; i++) answers.push(await fcgiGet(port));
    });
    for (const answer of answers) expect(parseRecords(answer).stdout).toBe("Content-Type: text/plain\r\n\r\nhello\n");
    // One FIONREAD a request sizes stdout's one record; stderr's end with nothing in it is poll's POLLHUP alone.
    const pipeCalls = lines.filter((line) => /^ioctl\(.*FIONREAD|^read\(\d+<pipe:/.test(line));
    expect(pipeCalls.length).toBeLessThanOrEqual(REQUESTS);
  }, 30000);
});

describe.skipIf(!STRACE)("--cgi-root -W 1: finding the program", () => {
  test("a SCRIPT_NAME of 2,000 segments after the program costs the worker a few dozen stats, not one a segment", async () => {
    using dir = tempDir();
    writeExecutable(join(dir.path, "app.cgi"), "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s' \"${#PATH_INFO}\"\n");
    await using server = await startServer(["--fastcgi", "-W", "1", "--cgi-root", dir.path, "-s", "0"]);
    await waitFor("the worker", () => workersOf(server.proc.pid).length === 1);
    const [worker] = workersOf(server.proc.pid);
    const port = server.target as number;
    const deep = "/x".repeat(2000);
    const vars = (scriptName: string): [string, string][] => [["DOCUMENT_ROOT", dir.path], ["SCRIPT_NAME", scriptName]];
    await exchange(port, fcgiRequest(1, vars("/app.cgi"))); // what a worker loads once is loaded
    const answers: Buffer[] = [];
    const lines = await traced(worker, async () => void answers.push((await exchange(port, fcgiRequest(1, vars(`/app.cgi${deep}`)))).data));
    expect(parseRecords(answers[0]).stdout).toBe("Content-Type: text/plain\r\n\r\n4000");
    expect(lines.filter((line) => /^(statx|newfstatat|stat|lstat)\(/.test(line)).length).toBeLessThan(100);
  }, 30000);
});
