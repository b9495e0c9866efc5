// What a request may not do, spoken directly to the port as a client that
// bypasses the web server would: get a program under --cgi-root to run or
// print a file outside the root (a name sent twice, PATH_TRANSLATED), set a
// Python CGI's outbound proxy with a "Proxy:" header in any case; and what it
// must keep: a PATH_INFO's bytes when socket splits it off SCRIPT_NAME.
import { describe, expect, test } from "bun:test";
import { chmodSync, chownSync, mkdirSync, realpathSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { exchange, startServer, tempDir, waitFor, writeExecutable, type Server } from "./harness.ts";
import { begin, parseRecords, record, scgiRequest } from "./gateway-peers.ts";

const PHP_CGI = Bun.which("php-cgi");
const PYTHON = Bun.which("python3");
if (PHP_CGI === null) console.warn("trust.test.ts: php-cgi is not installed (scripts/install-test-deps.sh installs it); its tests are skipped");

const SECRET = "TOP SECRET outside the root";
const MODES = [
  ["-W 2", ["-W", "2"]],
  ["-l -f", ["-l", "-f"]],
] as const;

type Pair = [string, string | Uint8Array];

/** Name-value pairs whose values may be bytes that are not UTF-8; a name may repeat. */
function fcgiPairs(vars: Pair[]): Buffer {
  const len = (n: number) => (n < 128 ? Buffer.from([n]) : Buffer.from([(n >>> 24) | 0x80, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]));
  return Buffer.concat(vars.flatMap(([n, v]) => [len(Buffer.byteLength(n)), len(Buffer.from(v).length), Buffer.from(n), Buffer.from(v)]));
}

/** One FastCGI request with these PARAMS; the CGI's answer. */
async function fastcgi(server: Server, vars: Pair[]): Promise<string> {
  const params = fcgiPairs([["REQUEST_METHOD", "GET"], ["CONTENT_LENGTH", "0"], ["REDIRECT_STATUS", "200"], ...vars]);
  const reply = await exchange(server.target, Buffer.concat([begin(1), record(4, 1, params), record(4, 1), record(5, 1)]));
  return parseRecords(reply.data).stdout;
}

/** root/app.php and root/app0.php (php-cgi with cgi.fix_pathinfo=0), root/who.cgi; outside/secret. */
function site(dir: string): { root: string; outside: string } {
  const base = realpathSync(dir);
  const root = join(base, "root");
  const outside = join(base, "outside");
  mkdirSync(root);
  mkdirSync(outside);
  writeFileSync(join(outside, "secret"), `${SECRET}\n`);
  // As fcgiwrap runs PHP: the script is the program; php-cgi then runs what SCRIPT_FILENAME (or PATH_TRANSLATED) names.
  writeExecutable(join(root, "app.php"), `#!${PHP_CGI}\n<?php echo "app ran\\n";\n`);
  writeExecutable(join(root, "app0.php"), `#!${PHP_CGI} -dcgi.fix_pathinfo=0\n<?php echo "app ran\\n";\n`);
  writeExecutable(join(root, "who.cgi"), `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho "SCRIPT_FILENAME=$SCRIPT_FILENAME"\necho "PATH_TRANSLATED=\${PATH_TRANSLATED-unset}"\n`);
  return { root, outside };
}

describe.each(MODES)("FastCGI --cgi-root with %s", (_name, mode) => {
  test.skipIf(PHP_CGI === null)("php-cgi never prints a file outside the root when SCRIPT_FILENAME comes twice: the last counts, for the program too", async () => {
    using dir = tempDir();
    const { root, outside } = site(dir.path);
    const secret = join(outside, "secret");
    await using server = await startServer(["--fastcgi", ...mode, "--cgi-root", root, "-s", "0"]);
    // The last value counts, for choosing the program as for the CGI: outside, so nothing runs.
    const twice = await fastcgi(server, [["SCRIPT_FILENAME", join(root, "app.php")], ["SCRIPT_FILENAME", secret]]);
    expect(twice).not.toContain(SECRET);
    expect(twice).toContain("Status: 403 Forbidden");
    expect(await fastcgi(server, [["SCRIPT_FILENAME", secret], ["SCRIPT_FILENAME", join(root, "app.php")]])).toContain("app ran\n");
  });

  test.skipIf(PHP_CGI === null)("php-cgi never runs the request's PATH_TRANSLATED, nor one made of DOCUMENT_ROOT + PATH_INFO outside the root", async () => {
    using dir = tempDir();
    const { root, outside } = site(dir.path);
    const secret = join(outside, "secret");
    await using server = await startServer(["--fastcgi", ...mode, "--cgi-root", root, "-s", "0"]);
    // DOCUMENT_ROOT + SCRIPT_NAME: php-cgi would run the request's PATH_TRANSLATED, were there no SCRIPT_FILENAME.
    const translated = await fastcgi(server, [["DOCUMENT_ROOT", root], ["SCRIPT_NAME", "/app.php"], ["PATH_TRANSLATED", secret]]);
    expect(translated).not.toContain(SECRET);
    expect(translated).toContain("app ran\n");
    // cgi.fix_pathinfo=0: php-cgi runs PATH_TRANSLATED before SCRIPT_FILENAME; DOCUMENT_ROOT + PATH_INFO outside is not one.
    const fix0 = await fastcgi(server, [["SCRIPT_FILENAME", join(root, "app0.php")], ["DOCUMENT_ROOT", outside], ["PATH_INFO", "/secret"], ["PATH_TRANSLATED", secret]]);
    expect(fix0).not.toContain(SECRET);
    expect(fix0).toContain("app ran\n");
  });

  test("the CGI's SCRIPT_FILENAME is the program's real path; PATH_TRANSLATED socket's own", async () => {
    using dir = tempDir();
    const { root, outside } = site(dir.path);
    const who = join(root, "who.cgi");
    await using server = await startServer(["--fastcgi", ...mode, "--cgi-root", root, "-s", "0"]);
    const twice = await fastcgi(server, [["SCRIPT_FILENAME", join(outside, "secret")], ["SCRIPT_FILENAME", `${root}/./who.cgi`], ["PATH_TRANSLATED", "/etc/passwd"]]);
    expect(twice).toContain(`SCRIPT_FILENAME=${who}\n`);
    expect(twice).toContain("PATH_TRANSLATED=unset\n");
    const byName = await fastcgi(server, [["DOCUMENT_ROOT", root], ["SCRIPT_NAME", "/who.cgi/doc"], ["PATH_TRANSLATED", "/etc/passwd"]]);
    expect(byName).toContain(`SCRIPT_FILENAME=${who}\n`);
    expect(byName).toContain(`PATH_TRANSLATED=${root}/doc\n`);
  });
});

// What urllib makes of the environment: the proxies, and every *_proxy name in any case.
const PROXY_CGI = `#!${PYTHON}
import os, urllib.request
print("Content-Type: text/plain\\r\\n\\r", end="")
print("proxies", sorted(urllib.request.getproxies().items()))
print("names", sorted(n for n in os.environ if n.lower().endswith("_proxy")))
print("accept", os.environ.get("HTTP_ACCEPT"))
`;

describe.each(MODES)("httpoxy with %s", (_name, mode) => {
  test.skipIf(PYTHON === null)("a Proxy: header as HTTP_proxy or HTTP_Proxy sets no Python CGI's proxy, over FastCGI and SCGI", async () => {
    using dir = tempDir();
    const cgi = writeExecutable(join(dir.path, "proxy.cgi"), PROXY_CGI);
    await using fcgi = await startServer(["--fastcgi", ...mode, "-p", cgi, "-s", "0"]);
    await using scgi = await startServer(["--scgi", ...mode, "-p", cgi, "-s", "0"]);
    const headers: [string, string][] = [["HTTP_ACCEPT", "text/html"], ["HTTP_proxy", "http://evil.example:1"], ["HTTP_Proxy", "http://evil.example:2"], ["HTTP_PROXY", "http://evil.example:3"]];
    const answers = [
      await fastcgi(fcgi, headers),
      (await exchange(scgi.target, scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"], ["REQUEST_METHOD", "GET"], ...headers]))).data.toString(),
    ];
    for (const text of answers) {
      expect(text).toContain("accept text/html\n");
      expect(text).toContain("names []\n");
      expect(text).not.toContain("evil.example");
    }
  });
});

// PATH_INFO's bytes in hex.
const HEX_CGI = `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nprintf %s "$PATH_INFO" | od -An -tx1 | tr -s ' \\n' ' '\necho\necho "SCRIPT_NAME=$SCRIPT_NAME"\n`;

describe.each(MODES)("--cgi-root with %s", (_name, mode) => {
  test("a PATH_INFO that is not UTF-8, split off SCRIPT_NAME, reaches the CGI byte for byte (FastCGI and SCGI)", async () => {
    using dir = tempDir();
    const root = realpathSync(dir.path);
    writeExecutable(join(root, "hex.cgi"), HEX_CGI);
    const scriptName = Buffer.concat([Buffer.from("/hex.cgi"), Buffer.from([0x2f, 0x63, 0x61, 0x66, 0xe9, 0x2e, 0x74, 0x78, 0x74])]); // "/hex.cgi/caf\xe9.txt"
    await using fcgi = await startServer(["--fastcgi", ...mode, "--cgi-root", root, "-s", "0"]);
    await using scgi = await startServer(["--scgi", ...mode, "--cgi-root", root, "-s", "0"]);
    const header = Buffer.concat([Buffer.from(`CONTENT_LENGTH\x000\x00SCGI\x001\x00REQUEST_METHOD\x00GET\x00DOCUMENT_ROOT\x00${root}\x00SCRIPT_NAME\x00`), scriptName, Buffer.from([0])]);
    const answers = [
      await fastcgi(fcgi, [["DOCUMENT_ROOT", root], ["SCRIPT_NAME", scriptName]]),
      (await exchange(scgi.target, Buffer.concat([Buffer.from(`${header.length}:`), header, Buffer.from(",")]))).data.toString(),
    ];
    for (const text of answers) {
      expect(text).toContain(" 2f 63 61 66 e9 2e 74 78 74 \n");
      expect(text).toContain("SCRIPT_NAME=/hex.cgi\n");
    }
  });
});

describe.each(MODES)("--cgi-root with %s: programs someone else could have written", (_name, mode) => {
  test("a world-writable script, a group-writable directory and a script owned by another user are answered 403, with one line saying why", async () => {
    using dir = tempDir();
    const root = realpathSync(dir.path);
    const ok = writeExecutable(join(root, "ok.cgi"), `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nran\\n'\n`);
    const open = writeExecutable(join(root, "open.cgi"), `#!/bin/sh\necho ran\n`);
    chmodSync(open, 0o757);
    mkdirSync(join(root, "team"));
    chmodSync(join(root, "team"), 0o775);
    writeExecutable(join(root, "team", "app.cgi"), `#!/bin/sh\necho ran\n`);
    const theirs = writeExecutable(join(root, "theirs.cgi"), `#!/bin/sh\necho ran\n`);
    chownSync(theirs, 12345, 12345);
    await using server = await startServer(["--fastcgi", ...mode, "--cgi-root", root, "-s", "0"]);
    expect(await fastcgi(server, [["SCRIPT_FILENAME", ok]])).toContain("ran");
    for (const [script, why] of [
      [open, `"${open}" is writable by others (chmod go-w)`],
      [join(root, "team", "app.cgi"), `"${join(root, "team")}" is writable by its group (chmod go-w)`],
      [theirs, `"${theirs}" is owned by uid 12345, neither root nor socket's user`],
    ]) {
      expect(await fastcgi(server, [["SCRIPT_FILENAME", script]])).toContain("403 Forbidden");
      await waitFor("the line saying why", () => server.stderr().includes(`socket: fastcgi: 403 Forbidden: ${why}\n`), 3000);
    }
  });

  test("a symlink in a directory others can write (pointable at any program of the root) is refused, as the request names it; a symlinked directory that is safe runs", async () => {
    using dir = tempDir();
    const root = realpathSync(dir.path);
    mkdirSync(join(root, "admin"));
    const secret = writeExecutable(join(root, "admin", "secret.cgi"), `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nran secret\\n'\n`);
    mkdirSync(join(root, "pub"));
    chmodSync(join(root, "pub"), 0o1777); // as /tmp: anyone may add a name, here a link to /admin/secret.cgi
    symlinkSync(secret, join(root, "pub", "x.cgi"));
    symlinkSync(join(root, "admin"), join(root, "tools"));
    await using server = await startServer(["--fastcgi", ...mode, "--cgi-root", root, "-s", "0"]);
    expect(await fastcgi(server, [["SCRIPT_FILENAME", join(root, "tools", "secret.cgi")]])).toContain("ran secret");
    expect(await fastcgi(server, [["SCRIPT_FILENAME", join(root, "pub", "x.cgi")]])).toContain("403 Forbidden");
    await waitFor("the line saying why", () => server.stderr().includes(`socket: fastcgi: 403 Forbidden: "${join(root, "pub")}" is writable by others (chmod go-w)\n`), 3000);
  });
});

describe.each(MODES)("dropped request variables with %s", (_name, mode) => {
  test("an application's variable the allow-list drops is said once, without -v, with the --pass-env that passes it; a steering one is offered none", async () => {
    using dir = tempDir();
    const cgi = writeExecutable(join(realpathSync(dir.path), "env.cgi"), `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho "CGIT_CONFIG=\${CGIT_CONFIG-unset}"\n`);
    await using server = await startServer(["--fastcgi", ...mode, "-p", cgi, "-s", "0"]);
    const vars: Pair[] = [["CGIT_CONFIG", "/srv/cgitrc"], ["GIT_PROJECT_ROOT", "/srv/git"], ["LD_PRELOAD", "/tmp/x.so"]];
    expect(await fastcgi(server, vars)).toContain("CGIT_CONFIG=unset");
    expect(await fastcgi(server, vars)).toContain("CGIT_CONFIG=unset");
    const line = (name: string) => `socket: dropped the request variable ${name}, which CGI programs are not given unless named: --pass-env ${name} lets it through\n`;
    await waitFor("both lines", () => server.stderr().includes(line("CGIT_CONFIG")) && server.stderr().includes(line("GIT_PROJECT_ROOT")), 3000);
    // Once per name and process: each of -W 2's workers may say it once.
    expect(server.stderr().split(line("CGIT_CONFIG")).length - 1).toBeLessThanOrEqual(mode[0] === "-W" ? 2 : 1);
    expect(server.stderr()).not.toContain("--pass-env LD_PRELOAD");
  });
});
