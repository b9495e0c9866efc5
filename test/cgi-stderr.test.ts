// A CGI's stderr on socket's log: dist/socket behind a real nginx, in a
// pool (-W 2: each CGI's lines written by its own worker) and with -l -f.
// SCGI has no channel for it, so it is always there; FastCGI sends STDERR
// records to the web server unless --cgi-stderr log. Each line is whole and
// names its program's pid and path, a long one is cut, and a request adds
// at most its budget to the log however much its program writes.
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { run, startServer, tempDir, waitFor, writeExecutable, type Server } from "./harness.ts";
import { noNginx, startNginx } from "./gateway-peers.ts";
import { LINE_BYTES, REQUEST_BUDGET } from "../src/request/stderr-lines.ts";

if (noNginx) console.warn("cgi-stderr.test.ts: nginx is not installed (scripts/install-test-deps.sh installs it); its tests are skipped");

/** Each of a pair writes half a line, waits until the other has too, then the rest: on a shared stderr the lines would mix. */
const pairScript = (me: string, other: string, letter: string) => `#!/bin/sh
half=$(head -c 1000 /dev/zero | tr '\\0' ${letter})
printf '%s' "$half" >&2
: > ${me}.half
i=0
while [ ! -e ${other}.half ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i + 1)); done
printf '%s\\n' "$half" >&2
head -c 10000 /dev/zero | tr '\\0' ${letter} >&2
echo >&2
echo "done ${me}" >&2
printf 'Content-Type: text/plain\\r\\n\\r\\npid %s\\n' $$
`;

/** 100 MiB of stderr in lines, then an answer. */
const FLOOD_BYTES = 100 * 1024 * 1024;
const FLOOD_LINE = "a complaint from flood.cgi";
const floodScript = `#!/bin/sh
yes '${FLOOD_LINE}' | head -c ${FLOOD_BYTES} >&2
printf 'Content-Type: text/plain\\r\\n\\r\\nstill answers, pid %s\\n' $$
`;

const sayScript = `#!/bin/sh
echo "said on stderr by $$" >&2
printf 'Content-Type: text/plain\\r\\n\\r\\npid %s\\n' $$
`;

/** Leaves a process in the background holding its stderr (not its stdout), which writes once the request is over. */
const backgroundScript = `#!/bin/sh
(trap '' PIPE; sleep 2; echo "late words" >&2; : > late.done) >/dev/null &
echo "early words" >&2
printf 'Content-Type: text/plain\\r\\n\\r\\npid %s\\n' $$
`;

/** Control characters on stderr (a CR, an escape sequence), as a CGI echoing a client's bytes may print them; a CRLF ends the line. */
const hostileScript = `#!/bin/sh
printf 'before\\rsocket: forged\\033[2J\\0\\r\\n' >&2
printf 'Content-Type: text/plain\\r\\n\\r\\npid %s\\n' $$
`;

/** The site: the programs under one --cgi-root; nginx names each by SCRIPT_FILENAME. */
function makeSite(dir: string): string {
  const root = join(dir, "site");
  mkdirSync(root);
  writeExecutable(join(root, "a.cgi"), pairScript("a", "b", "A"));
  writeExecutable(join(root, "b.cgi"), pairScript("b", "a", "B"));
  writeExecutable(join(root, "flood.cgi"), floodScript);
  writeExecutable(join(root, "say.cgi"), sayScript);
  writeExecutable(join(root, "background.cgi"), backgroundScript);
  writeExecutable(join(root, "hostile.cgi"), hostileScript);
  return root;
}

const pidOf = async (response: Response) => {
  expect(response.status).toBe(200);
  const pid = (await response.text()).match(/pid (\d+)/)?.[1];
  expect(pid).toBeDefined();
  return Number(pid);
};

/** The contents of the lines socket's stderr has from this program, prefix checked and taken off. */
function linesOf(server: Server, pid: number, program: string): string[] {
  const prefix = `cgi ${pid} ${program}: `;
  return server
    .stderr()
    .split("\n")
    .filter((line) => line.startsWith(`cgi ${pid} `))
    .map((line) => {
      expect(line.startsWith(prefix)).toBe(true);
      return line.slice(prefix.length);
    });
}

const DROPPED = /^\.\.\. (\d+) bytes of stderr dropped$/;

const modes = [
  { name: "-W 2", args: ["-W", "2"] },
  { name: "-l -f", args: ["-l", "-f"] },
];
const logged = [
  { name: "SCGI", args: ["--scgi"], protocol: "scgi" as const, param: "scgi_param" },
  { name: "FastCGI --cgi-stderr log", args: ["--fastcgi", "--cgi-stderr", "log"], protocol: "fastcgi" as const, param: "fastcgi_param" },
];

describe.each(modes)("with $name", ({ args: mode }) => {
  describe.each(logged)("$name", ({ args: gateway, protocol, param }) => {
    const serve = (root: string, stderrFile?: string) => startServer([...gateway, ...mode, "--cgi-root", root, "-s", "0"], { stderrFile });
    const front = (dir: string, root: string, server: Server) =>
      startNginx(dir, protocol, server.target, { locations: (pass) => `location / { ${pass} ${param} SCRIPT_FILENAME ${root}$uri; }` });

    test.skipIf(noNginx)("two CGIs at once: only whole lines, each with its own pid and program; a long one cut", async () => {
      using dir = tempDir();
      const root = makeSite(dir.path);
      await using server = await serve(root);
      await using nginx = await front(dir.path, root, server);
      const [a, b] = await Promise.all([nginx.fetch("/a.cgi").then(pidOf), nginx.fetch("/b.cgi").then(pidOf)]);
      await waitFor("both CGIs' last words", () => server.stderr().includes("done a") && server.stderr().includes("done b"));
      // Not a letter of theirs but on a line of its own: nothing came through raw, nothing mixed.
      for (const line of server.stderr().split("\n")) if (/AAAA|BBBB/.test(line)) expect(line).toMatch(new RegExp(`^cgi (${a} ${root}/a\\.cgi: A+|${b} ${root}/b\\.cgi: B+)( \\[cut\\])?$`));
      for (const [pid, name, letter] of [[a, "a", "A"], [b, "b", "B"]] as const) {
        await waitFor(`${name}.cgi's last line`, () => linesOf(server, pid, `${root}/${name}.cgi`).some((line) => DROPPED.test(line)));
        const lines = linesOf(server, pid, `${root}/${name}.cgi`);
        expect(lines.length).toBe(4);
        expect(lines[0]).toBe(letter.repeat(2000));
        // Cut so that the line as written, prefix and newline included, is one atomic write.
        expect(lines[1]).toMatch(new RegExp(`^${letter}+ \\[cut\\]$`));
        const written = `cgi ${pid} ${root}/${name}.cgi: ${lines[1]}\n`.length;
        expect(written).toBe(LINE_BYTES);
        expect(lines[2]).toBe(`done ${name}`);
        const cutAt = lines[1].length - " [cut]".length;
        expect(Number(lines[3].match(DROPPED)![1])).toBe(10000 - cutAt + 1); // the rest of the long line and its newline
      }
    });

    test.skipIf(noNginx)("read until the program exits: a process it left holding stderr holds neither the request nor the log", async () => {
      using dir = tempDir();
      const root = makeSite(dir.path);
      await using server = await serve(root);
      await using nginx = await front(dir.path, root, server);
      const started = Date.now();
      const pid = await pidOf(await nginx.fetch("/background.cgi"));
      expect(Date.now() - started).toBeLessThan(1800); // its background process sleeps 2 s first
      await waitFor("its early line", () => linesOf(server, pid, `${root}/background.cgi`).includes("early words"));
      await waitFor("the background process to have written", () => existsSync(join(root, "late.done")));
      // A later request's line: by then a line of the late words would be there too.
      const next = await pidOf(await nginx.fetch("/say.cgi"));
      await waitFor("the next request's line", () => linesOf(server, next, `${root}/say.cgi`).length > 0);
      expect(server.stderr()).not.toContain("late words");
    });

    test.skipIf(noNginx)("a CR or an escape sequence on stderr reaches the log as ?: no line forged, no terminal's state changed", async () => {
      using dir = tempDir();
      const root = makeSite(dir.path);
      await using server = await serve(root);
      await using nginx = await front(dir.path, root, server);
      const pid = await pidOf(await nginx.fetch("/hostile.cgi"));
      await waitFor("its line", () => linesOf(server, pid, `${root}/hostile.cgi`).length > 0);
      expect(linesOf(server, pid, `${root}/hostile.cgi`)).toEqual(["before?socket: forged?[2J?"]);
      expect(server.stderr()).not.toMatch(/[\r\x1b\0]/);
    });

    test.skipIf(noNginx)("100 MiB of stderr: the log grows by at most the budget and one line, and the request still answers", async () => {
      using dir = tempDir();
      const log = join(dir.path, "socket.log");
      const root = makeSite(dir.path);
      await using server = await serve(root, log);
      await using nginx = await front(dir.path, root, server);
      const before = statSync(log).size;
      const response = await nginx.fetch("/flood.cgi");
      const text = await response.text();
      expect(text).toContain("still answers");
      const pid = Number(text.match(/pid (\d+)/)![1]);
      const said = () => linesOf(server, pid, `${root}/flood.cgi`).some((line) => DROPPED.test(line));
      await waitFor("the line saying what was dropped (or the log past its bound)", () => said() || statSync(log).size - before > 2 * REQUEST_BUDGET, 15_000);
      // Besides its lines, only -v's few (the connection's).
      expect(statSync(log).size - before).toBeLessThan(REQUEST_BUDGET + 1024);
      const lines = linesOf(server, pid, `${root}/flood.cgi`);
      const prefix = `cgi ${pid} ${root}/flood.cgi: `;
      const kept = lines.slice(0, -1);
      expect(kept.every((line) => line === FLOOD_LINE)).toBe(true);
      expect(kept.reduce((sum, line) => sum + prefix.length + line.length + 1, 0)).toBeLessThanOrEqual(REQUEST_BUDGET);
      expect(kept.length).toBeGreaterThan(0);
      // Every byte it wrote is either logged or counted.
      expect(Number(lines.at(-1)!.match(DROPPED)![1])).toBe(FLOOD_BYTES - kept.length * (FLOOD_LINE.length + 1));
    }, 30_000);
  });

  describe("FastCGI", () => {
    const serve = (root: string, extra: string[]) => startServer(["--fastcgi", ...extra, ...mode, "--cgi-root", root, "-s", "0"]);
    const front = (dir: string, root: string, server: Server) =>
      startNginx(dir, "fastcgi", server.target, { locations: (pass) => `location / { ${pass} fastcgi_param SCRIPT_FILENAME ${root}$uri; }` });

    test.skipIf(noNginx)("by default stderr goes to nginx in STDERR records, not to socket's log", async () => {
      using dir = tempDir();
      const root = makeSite(dir.path);
      await using server = await serve(root, []);
      await using nginx = await front(dir.path, root, server);
      const pid = await pidOf(await nginx.fetch("/say.cgi"));
      await waitFor("nginx's error log to have the CGI's stderr", () => nginx.errorLog().includes(`FastCGI sent in stderr: "said on stderr by ${pid}`));
      expect(server.stderr()).not.toContain(`said on stderr by ${pid}`);
    });

    test.skipIf(noNginx)("by default, 100 MiB of stderr: nginx gets at most the budget and one note of the rest, and the request still answers", async () => {
      using dir = tempDir();
      const root = makeSite(dir.path);
      await using server = await serve(root, []);
      await using nginx = await front(dir.path, root, server);
      const text = await (await nginx.fetch("/flood.cgi")).text();
      expect(text).toContain("still answers");
      const note = `... ${FLOOD_BYTES - REQUEST_BUDGET} bytes of stderr dropped`;
      await waitFor("nginx's error log to have the note", () => nginx.errorLog().includes(note), 15_000);
      // nginx logs the first 2 KiB or so of each STDERR record: unbounded, 100 MiB made megabytes of its log.
      expect(nginx.errorLog().length).toBeLessThan(2 * REQUEST_BUDGET);
      expect(server.stderr()).not.toContain(FLOOD_LINE);
    }, 30_000);

    test.skipIf(noNginx)("--cgi-stderr log: on socket's log as its line, and nginx gets none", async () => {
      using dir = tempDir();
      const root = makeSite(dir.path);
      await using server = await serve(root, ["--cgi-stderr", "log"]);
      await using nginx = await front(dir.path, root, server);
      const pid = await pidOf(await nginx.fetch("/say.cgi"));
      await waitFor("socket's stderr to have the CGI's line", () => server.stderr().includes(`cgi ${pid} ${root}/say.cgi: said on stderr by ${pid}\n`));
      expect(nginx.errorLog()).not.toContain("FastCGI sent in stderr");
    });
  });
});

describe("--cgi-stderr on the command line", () => {
  test.each([
    [["--scgi", "--cgi-stderr", "web", "-p", "/bin/true", "-s", "0"], "--cgi-stderr web is for --fastcgi: SCGI has no stderr channel to the web server"],
    [["--fastcgi", "--cgi-stderr", "syslog", "-p", "/bin/true", "-s", "0"], "--cgi-stderr wants web or log, not 'syslog'"],
    [["--cgi-stderr", "log", "-p", "/bin/true", "-s", "0"], "--cgi-stderr needs --scgi or --fastcgi"],
  ])("%p: the reason, the usage line and the usage status", async (args, why) => {
    const { status, stderr } = await run(args);
    expect(status).toBe(15);
    expect(stderr.split("\n")[0]).toBe(`socket: ${why}`);
    expect(stderr.split("\n")[1]).toStartWith("Usage:");
  });
});
