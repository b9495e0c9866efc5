// --cgi-root: a whole site behind one socket, the program chosen per request
// as fcgiwrap chooses it (SCRIPT_FILENAME, else DOCUMENT_ROOT + SCRIPT_NAME
// trimmed to an executable file, the rest PATH_INFO), confined to the root;
// and the CGI's working directory is its script's (RFC 3875 section 7.2).
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, realpathSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { exchange, run, startServer, tempDir, waitFor, type Server, writeExecutable } from "./harness.ts";
import { fcgiRequest, noNginx, parseRecords, scgiRequest, startNginx } from "./gateway-peers.ts";

if (noNginx) console.warn("site.test.ts: nginx is not installed (scripts/install-test-deps.sh installs it); the nginx tests are skipped");

// Each program says who it is, where it runs, and how the request named it.
const REPORT = `printf 'Content-Type: text/plain\\r\\n\\r\\n'\necho "name $NAME"\necho "cwd $(pwd)"\necho "SCRIPT_NAME=$SCRIPT_NAME"\necho "PATH_INFO=\${PATH_INFO-unset}"\n`;

const script = (path: string, body: string, mode = 0o755): string => writeExecutable(path, `#!/bin/sh\n${body}`, mode);

interface Site {
  root: string;
  outside: string;
  /** Created by outside/evil.cgi if it ever runs. */
  marker: string;
}

/** A site: root/a.cgi, root/cgi-bin/env.cgi, a file not executable, a directory, a FIFO, a symlink out of the root. */
function makeSite(dir: string): Site {
  // realpath: the kernel's name for the test's directory (/tmp may be a symlink).
  const base = realpathSync(dir);
  const root = join(base, "root");
  const outside = join(base, "outside");
  const marker = join(base, "evil-ran");
  mkdirSync(join(root, "cgi-bin"), { recursive: true });
  mkdirSync(join(root, "sub"));
  mkdirSync(outside);
  script(join(root, "a.cgi"), `NAME=a\n${REPORT}`);
  script(join(root, "cgi-bin", "env.cgi"), `NAME=env\n${REPORT}`);
  script(join(root, "noexec.cgi"), `NAME=noexec\n${REPORT}`, 0o644);
  script(join(outside, "evil.cgi"), `touch ${marker}\nNAME=evil\n${REPORT}`);
  symlinkSync(join(outside, "evil.cgi"), join(root, "link.cgi"));
  expect(Bun.spawnSync(["mkfifo", join(root, "fifo.cgi")]).exitCode).toBe(0);
  return { root, outside, marker };
}

const protocols = [
  { name: "FastCGI", flag: "--fastcgi", protocol: "fastcgi" as const, param: "fastcgi_param" },
  { name: "SCGI", flag: "--scgi", protocol: "scgi" as const, param: "scgi_param" },
];

/** One request spoken directly with these variables; the CGI answer's text. */
async function ask(server: Server, protocol: "scgi" | "fastcgi", vars: [string, string][]): Promise<string> {
  if (protocol === "scgi") {
    const reply = await exchange(server.target, scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"], ["REQUEST_METHOD", "GET"], ...vars]));
    return reply.data.toString();
  }
  const reply = await exchange(server.target, fcgiRequest(1, [["REQUEST_METHOD", "GET"], ...vars]));
  return parseRecords(reply.data).stdout;
}

const lines = (server: Server, status: string) => server.stderr().split("\n").filter((l) => l.includes(status)).length;

describe.each(protocols)("$name --cgi-root", ({ flag, protocol, param }) => {
  const start = (site: Site) => startServer([flag, "-W", "2", "--cgi-root", site.root, "-s", "0"]);

  test.skipIf(noNginx)("one socket behind nginx: each location's SCRIPT_FILENAME, and /cgi-bin/ by DOCUMENT_ROOT + SCRIPT_NAME with PATH_INFO", async () => {
    using dir = tempDir();
    const site = makeSite(dir.path);
    await using server = await start(site);
    // As fcgiwrap's users write it: the program named per location, or found under the location's root.
    const scriptName = protocol === "scgi" ? ` ${param} SCRIPT_NAME $uri;` : "";
    await using nginx = await startNginx(dir.path, protocol, server.target, {
      locations: (pass) => `
        location = /a { ${pass} ${param} SCRIPT_FILENAME ${site.root}/a.cgi; }
        location = /env { ${pass} ${param} SCRIPT_FILENAME ${site.root}/cgi-bin/env.cgi; }
        location /cgi-bin/ { root ${site.root}; ${pass}${scriptName} }`,
    });
    const a = await nginx.fetch("/a");
    expect(a.status).toBe(200);
    const aText = await a.text();
    expect(aText).toContain("name a\n");
    expect(aText).toContain(`cwd ${site.root}\n`);
    const env = await (await nginx.fetch("/env")).text();
    expect(env).toContain("name env\n");
    expect(env).toContain(`cwd ${site.root}/cgi-bin\n`);
    const bin = await nginx.fetch("/cgi-bin/env.cgi/some/path?q=1");
    expect(bin.status).toBe(200);
    const binText = await bin.text();
    expect(binText).toContain("name env\n");
    expect(binText).toContain("SCRIPT_NAME=/cgi-bin/env.cgi\n");
    expect(binText).toContain("PATH_INFO=/some/path\n");
    expect(binText).toContain(`cwd ${site.root}/cgi-bin\n`);
    // Named exactly: no PATH_INFO.
    expect(await (await nginx.fetch("/cgi-bin/env.cgi")).text()).toContain("PATH_INFO=unset\n");
    const missing = await nginx.fetch("/cgi-bin/nothing.cgi/x");
    expect(missing.status).toBe(404);
    expect((await nginx.fetch("/cgi-bin/")).status).toBe(403);
  });

  // Answered at the end of the header, before the body: closing with the body unread reset the answer into nginx's 502.
  test.skipIf(noNginx)("POSTs to what is not there or must not run, through nginx on connections not kept: 404 or 403, never 502", async () => {
    using dir = tempDir();
    const site = makeSite(dir.path);
    for (const mode of [["-W", "2"], ["-l", "-f"]]) {
      await using server = await startServer([flag, ...mode, "--cgi-root", site.root, "-s", "0"]);
      const pass = (p: string) => `location / { ${p} ${param} SCRIPT_FILENAME ${site.root}$uri; }`;
      await using nginx = await startNginx(join(dir.path, mode[0]), protocol, server.target, { maxBody: "8m", locations: pass });
      const statuses: number[] = [];
      for (const [path, size] of [1000, 100_000, 1_000_000, 3_000_000].flatMap((n) => [["/nothing.cgi", n], ["/noexec.cgi", n]] as const)) {
        for (let i = 0; i < 5; i++) {
          const response = await nginx.fetch(path, { method: "POST", body: "x".repeat(size) });
          await response.text();
          statuses.push(response.status);
        }
      }
      expect({ mode, statuses: [...new Set(statuses)].sort() }).toEqual({ mode, statuses: [403, 404] });
    }
  }, 30_000);

  test("what must not run gets 403, what is not there 404, each with one -v line, and nothing runs", async () => {
    using dir = tempDir();
    const site = makeSite(dir.path);
    await using server = await start(site);
    const refused: [vars: [string, string][], status: "403 Forbidden" | "404 Not Found", why: string][] = [
      [[["SCRIPT_FILENAME", "/etc/passwd"]], "403 Forbidden", "outside the --cgi-root"],
      [[["SCRIPT_FILENAME", `${site.root}/../outside/evil.cgi`]], "403 Forbidden", "outside the --cgi-root"],
      [[["DOCUMENT_ROOT", site.root], ["SCRIPT_NAME", "/../outside/evil.cgi"]], "403 Forbidden", "outside the --cgi-root"],
      [[["SCRIPT_FILENAME", `${site.root}/link.cgi`]], "403 Forbidden", "outside the --cgi-root"],
      [[["DOCUMENT_ROOT", site.root], ["SCRIPT_NAME", "/link.cgi/x"]], "403 Forbidden", "outside the --cgi-root"],
      [[["SCRIPT_FILENAME", `${site.root}/noexec.cgi`]], "403 Forbidden", "is not executable"],
      [[["SCRIPT_FILENAME", `${site.root}/sub`]], "403 Forbidden", "is a directory"],
      [[["SCRIPT_FILENAME", `${site.root}/fifo.cgi`]], "403 Forbidden", "is not a regular file"],
      [[["SCRIPT_FILENAME", "a.cgi"]], "403 Forbidden", "is not an absolute path"],
      [[], "403 Forbidden", "names no program"],
      [[["SCRIPT_FILENAME", `${site.root}/none.cgi`]], "404 Not Found", "no program"],
      [[["DOCUMENT_ROOT", site.root], ["SCRIPT_NAME", "/sub/none.cgi/x"]], "404 Not Found", "no program"],
    ];
    let forbidden = 0;
    let notFound = 0;
    for (const [vars, status, why] of refused) {
      const answer = await ask(server, protocol, vars);
      expect(answer.startsWith(`Status: ${status}\r\n`)).toBe(true);
      if (status === "403 Forbidden") forbidden++;
      else notFound++;
      await waitFor(`the -v line for ${JSON.stringify(vars)}`, () => lines(server, "403 Forbidden: ") + lines(server, "404 Not Found: ") === forbidden + notFound);
      expect(server.stderr().split("\n").filter((l) => l.includes(`${status}: `)).at(-1)).toContain(why);
    }
    expect(lines(server, "403 Forbidden: ")).toBe(forbidden);
    expect(lines(server, "404 Not Found: ")).toBe(notFound);
    expect(existsSync(site.marker)).toBe(false);
    // And what is inside runs, from its own directory.
    const ok = await ask(server, protocol, [["SCRIPT_FILENAME", `${site.root}/cgi-bin/env.cgi`]]);
    expect(ok).toContain("name env\n");
    expect(ok).toContain(`cwd ${site.root}/cgi-bin\n`);
  });

  test("a symlink inside the root to a program inside it runs", async () => {
    using dir = tempDir();
    const site = makeSite(dir.path);
    symlinkSync(join(site.root, "a.cgi"), join(site.root, "cgi-bin", "alias.cgi"));
    await using server = await start(site);
    const answer = await ask(server, protocol, [["DOCUMENT_ROOT", site.root], ["SCRIPT_NAME", "/cgi-bin/alias.cgi/p"]]);
    expect(answer).toContain("name a\n");
    expect(answer).toContain("PATH_INFO=/p\n");
    // Runs where its real file is.
    expect(answer).toContain(`cwd ${site.root}\n`);
  });

  test("-p with a path: the CGI runs in its script's directory", async () => {
    using dir = tempDir();
    const site = makeSite(dir.path);
    await using server = await startServer([flag, "-W", "1", "-p", join(site.root, "cgi-bin", "env.cgi"), "-s", "0"], { cwd: "/" });
    const answer = await ask(server, protocol, []);
    expect(answer).toContain(`cwd ${site.root}/cgi-bin\n`);
  });

  test("with -l -f as in a pool", async () => {
    using dir = tempDir();
    const site = makeSite(dir.path);
    await using server = await startServer([flag, "-l", "-f", "--cgi-root", site.root, "-s", "0"]);
    const answer = await ask(server, protocol, [["SCRIPT_FILENAME", `${site.root}/a.cgi`]]);
    expect(answer).toContain("name a\n");
    expect((await ask(server, protocol, [["SCRIPT_FILENAME", "/etc/passwd"]])).startsWith("Status: 403 Forbidden\r\n")).toBe(true);
  });
});

describe("the command line", () => {
  test.each([
    [["-s", "0", "--cgi-root", "/tmp"], "--cgi-root needs --scgi or --fastcgi"],
    [["--fastcgi", "-s", "0", "-p", "/bin/cat", "--cgi-root", "/tmp"], "--cgi-root and -p are mutually exclusive"],
    [["--scgi", "-s", "0", "--cgi-root", "tmp"], "--cgi-root wants an absolute path"],
    [["--scgi", "-s", "0", "--cgi-root", "/etc/passwd"], "is not a directory"],
    [["--scgi", "-s", "0", "--cgi-root", "/nonexistent-dir"], "ENOENT"],
  ])("%p is a usage error", async (args, message) => {
    const { status, stderr } = await run(args);
    expect(status).toBe(15);
    expect(stderr).toContain(message);
    expect(stderr).not.toContain(" at ");
  });
});
