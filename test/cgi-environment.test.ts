// A CGI's environment under --scgi and --fastcgi: a client that talks to
// the backend port directly (no web server in between) must never choose
// it, and socket's own environment must never supply what only a request
// may say (HTTPS, REMOTE_USER, ...). Requests are sent straight to the port.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { exchange, run, startServer, tempDir, waitFor, type Server, writeExecutable } from "./harness.ts";
import { begin, fcgiRequest, noNginx, parseRecords, record, scgiRequest, startNginx, PROTOCOLS } from "./gateway-peers.ts";

const PATH = "/usr/local/bin:/usr/bin:/bin";

const script = (dir: string, name: string, text: string): string => writeExecutable(join(dir, name), text);

const envCgi = (dir: string) => script(dir, "env.cgi", `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nenv\n`);

/** The CGI's stdout for one request with these variables. */
async function ask(server: Server, protocol: "scgi" | "fastcgi", vars: [string, string][]): Promise<string> {
  if (protocol === "scgi") return (await exchange(server.target, scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"], ...vars]))).data.toString();
  return parseRecords((await exchange(server.target, fcgiRequest(1, vars))).data).stdout;
}

/** What a request may not set: each steers some program, library or runtime. */
const HOSTILE: [string, string][] = [
  ["PERL5OPT", "-Mbase;print(`id`);exit"],
  ["NODE_OPTIONS", "--require=/evil/node.js"],
  ["PYTHONPATH", "/evil/python"],
  ["PERL5LIB", "/evil/perl"],
  ["RUBYOPT", "-r/evil/ruby"],
  ["GIT_SSH_COMMAND", "/evil/ssh"],
  ["http_proxy", "http://evil-lower:1"],
  ["https_proxy", "http://evil-lower-s:1"],
  ["ALL_PROXY", "http://evil-all:1"],
  ["SSL_CERT_FILE", "/evil/ca.pem"],
  ["REQUESTS_CA_BUNDLE", "/evil/bundle.pem"],
  ["HOME", "/evil/home"],
  ["HTTP_PROXY", "http://evil-httpoxy:1"],
  ["LD_PRELOAD", "/evil/preload.so"],
];

/** What a web server sends, and must arrive. */
const FROM_WEB_SERVER: [string, string][] = [
  ["REQUEST_METHOD", "GET"],
  ["QUERY_STRING", "a=1&b=2"],
  ["REQUEST_URI", "/app?a=1&b=2"],
  ["HTTP_X_FOO", "bar"],
  ["HTTPS", "on"],
  ["CONTEXT_PREFIX", "/app"],
  ["SSL_CLIENT_S_DN", "CN=client"],
];

/**
 * Names a web server never sends, as bytes: a NUL (C would read the name up
 * to it), an "=" (the environment's separator) and bytes that are not
 * UTF-8. SCGI's header is NUL-separated: there, only the last two.
 */
const HOSTILE_NAMES: [Buffer, string][] = [
  [Buffer.from("LD_PRELOAD\0HTTP_X"), "/evil/nul-after.so"],
  [Buffer.from("HTTP_X\0LD_PRELOAD"), "/evil/nul-before.so"],
  [Buffer.from("PATH_INFO\0"), "/evil/nul-path-info"],
  [Buffer.from("HTTP_A=LD_PRELOAD"), "/evil/equals.so"],
  [Buffer.concat([Buffer.from("LD_PRELOAD"), Buffer.from([0xff])]), "/evil/ff.so"],
  [Buffer.concat([Buffer.from("HTTP_X_"), Buffer.from([0xe9])]), "/evil/e9"],
];

/** The CGI's stdout for one request whose names are bytes. */
async function askBytes(server: Server, protocol: "scgi" | "fastcgi", vars: [Buffer, string][]): Promise<string> {
  if (protocol === "scgi") {
    const header = Buffer.concat(vars.flatMap(([n, v]) => [n, Buffer.from([0]), Buffer.from(v), Buffer.from([0])]));
    return (await exchange(server.target, Buffer.concat([Buffer.from(`${header.length}:`), header, Buffer.from(",")]))).data.toString("latin1");
  }
  const len = (n: number) => (n < 128 ? Buffer.from([n]) : Buffer.from([(n >>> 24) | 0x80, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]));
  const params = Buffer.concat(vars.flatMap(([n, v]) => [len(n.length), len(Buffer.byteLength(v)), n, Buffer.from(v)]));
  return parseRecords((await exchange(server.target, Buffer.concat([begin(1), record(4, 1, params), record(4, 1), record(5, 1)]))).data).stdout;
}

const protocols = PROTOCOLS;
const modes = [
  { name: "-W 2", args: ["-W", "2"] },
  { name: "-l -f", args: ["-l", "-f"] },
];

describe.each(protocols)("$name", ({ flag, protocol }) => {
  describe.each(modes)("with $name", ({ args }) => {
    const start = (program: string, extra: string[] = [], env: Record<string, string> = {}) =>
      startServer([flag, ...args, ...extra, "-p", program, "-s", "0"], { env: { PATH, ...env } });

    test("PERL5OPT from a client does not run code in a Perl CGI", async () => {
      using dir = tempDir();
      const perl = script(dir.path, "ok.cgi", `#!/usr/bin/perl\nprint "Content-Type: text/plain\\r\\n\\r\\nok\\n";\n`);
      await using server = await start(perl);
      const text = await ask(server, protocol, [["REQUEST_METHOD", "GET"], ["PERL5OPT", "-Mbase;print(`id`);exit"]]);
      expect(text).not.toContain("uid=");
      expect(text).toContain("ok\n");
    });

    test("only the CGI variables of a request reach the program; the rest is dropped with a -v line", async () => {
      using dir = tempDir();
      await using server = await start(envCgi(dir.path));
      const lines = (await ask(server, protocol, [...FROM_WEB_SERVER, ...HOSTILE])).split("\n");
      for (const [name, value] of FROM_WEB_SERVER) expect(lines).toContain(`${name}=${value}`);
      expect(lines).toContain("GATEWAY_INTERFACE=CGI/1.1");
      expect(lines).toContain(`PATH=${PATH}`);
      // Checked by value: socket's own environment (HOME, a proxy) may have the name.
      for (const [name, value] of HOSTILE) expect(lines).not.toContain(`${name}=${value}`);
      const prefix = `${protocol}: dropped request variables not allowed: `;
      const dropped = () => server.stderr().split("\n").find((l) => l.startsWith(prefix));
      await waitFor("the -v line naming what was dropped", () => dropped() !== undefined);
      const names = dropped()!.slice(prefix.length).split(", ");
      expect(names.toSorted()).toEqual(HOSTILE.map(([name]) => name).toSorted());
    });

    test("a name with a NUL, an \"=\" or bytes that are not UTF-8 never reaches the program", async () => {
      using dir = tempDir();
      await using server = await start(envCgi(dir.path));
      const names = HOSTILE_NAMES.filter(([name]) => protocol === "fastcgi" || !name.includes(0));
      const head: [Buffer, string][] = [[Buffer.from("CONTENT_LENGTH"), "0"], [Buffer.from("SCGI"), "1"]];
      const text = await askBytes(server, protocol, [...(protocol === "scgi" ? head : []), [Buffer.from("HTTP_X_FINE"), "kept"], ...names]);
      expect(text).toContain("HTTP_X_FINE=kept\n");
      expect(text).not.toContain("/evil/");
      expect(text.split("\n").filter((l) => l.startsWith("LD_PRELOAD") || l.startsWith("PATH_INFO"))).toEqual([]);
    });

    test("a CGI variable in socket's own environment never reaches a program; a request's does", async () => {
      using dir = tempDir();
      const own = { HTTPS: "on", REMOTE_USER: "x", AUTH_TYPE: "Basic", HTTP_X_OWN: "1", SOCKET_TEST_KEPT: "kept" };
      await using server = await start(envCgi(dir.path), [], own);
      const without = (await ask(server, protocol, [["REQUEST_METHOD", "GET"]])).split("\n");
      for (const name of ["HTTPS", "REMOTE_USER", "AUTH_TYPE", "HTTP_X_OWN"]) {
        expect(without.filter((l) => l.startsWith(`${name}=`))).toEqual([]);
      }
      expect(without).toContain("SOCKET_TEST_KEPT=kept"); // the rest of socket's environment still passes
      expect(without).toContain("GATEWAY_INTERFACE=CGI/1.1");
      const alice = (await ask(server, protocol, [["REQUEST_METHOD", "GET"], ["REMOTE_USER", "alice"]])).split("\n");
      expect(alice.filter((l) => l.startsWith("REMOTE_USER="))).toEqual(["REMOTE_USER=alice"]);
    });

    test.skipIf(noNginx)("through nginx with its stock params: nothing is dropped, and socket's HTTPS=on is not the request's", async () => {
      using dir = tempDir();
      await using server = await start(envCgi(dir.path), [], { HTTPS: "on" });
      await using nginx = await startNginx(dir.path, protocol, server.target);
      const response = await nginx.fetch(`/app?q=1`, { headers: { "X-Foo": "bar" } });
      expect(response.status).toBe(200);
      const lines = (await response.text()).split("\n");
      for (const line of ["REQUEST_METHOD=GET", "QUERY_STRING=q=1", "REQUEST_URI=/app?q=1", "HTTP_X_FOO=bar", "REQUEST_SCHEME=http"]) {
        expect(lines).toContain(line);
      }
      expect(lines.filter((l) => l.startsWith("HTTPS="))).toEqual([]); // plain HTTP: nginx sends no HTTPS
      expect(server.stderr()).not.toContain("dropped request variables");
    });

    test("--pass-env FOO lets a request's FOO through; without it FOO is dropped", async () => {
      using dir = tempDir();
      const cgi = envCgi(dir.path);
      {
        // socket's own FOO is not a default: FOO is the request's, or unset.
        await using server = await start(cgi, ["--pass-env", "FOO", "--pass-env", "BAR_2"], { FOO: "own" });
        const lines = (await ask(server, protocol, [["FOO", "from-request"], ["BAR_2", "two"], ["BAZ", "three"]])).split("\n");
        expect(lines).toContain("FOO=from-request");
        expect(lines).toContain("BAR_2=two");
        expect(lines.filter((l) => l.startsWith("BAZ="))).toEqual([]);
        const none = (await ask(server, protocol, [["REQUEST_METHOD", "GET"]])).split("\n");
        expect(none.filter((l) => l.startsWith("FOO="))).toEqual([]);
      }
      await using plain = await start(cgi);
      const lines = (await ask(plain, protocol, [["FOO", "from-request"]])).split("\n");
      expect(lines.filter((l) => l.startsWith("FOO="))).toEqual([]);
    });
  });
});

test("--pass-env without a gateway, or with a NAME that is no variable name: one line and status 15", async () => {
  for (const [args, line] of [
    [["--pass-env", "FOO", "-s", "0", "-p", "cat"], "socket: --pass-env needs --scgi or --fastcgi"],
    [["--scgi", "--pass-env", "A-B", "-s", "0", "-p", "/bin/cat"], "socket: --pass-env wants a variable name (letters, digits and _, not starting with a digit), not 'A-B'"],
    [["--fastcgi", "--pass-env", "9X", "-s", "0", "-p", "/bin/cat"], "socket: --pass-env wants a variable name (letters, digits and _, not starting with a digit), not '9X'"],
    [["--scgi", "--pass-env=", "-s", "0", "-p", "/bin/cat"], "socket: --pass-env wants a variable name (letters, digits and _, not starting with a digit), not ''"],
  ] as [string[], string][]) {
    const result = await run(args);
    expect(result.status).toBe(15);
    expect(result.stdout).toBe("");
    // The line, then getopt's usage line, as every usage error has.
    expect(result.stderr.split("\n")[0]).toBe(line);
    expect(result.stderr.split("\n")[1]).toStartWith("Usage: ");
    expect(result.stderr).not.toContain("    at ");
  }
});
