// --scgi and --fastcgi: dist/socket behind a real nginx (Debian's package,
// installed by scripts/install-test-deps.sh), and spoken to directly for
// what a web server would never send (malformed requests, hostile names).
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { descendantsOf, exchange, run, serverHasRead, startServer, tempDir, waitFor, writeExecutable, type Server } from "./harness.ts";
import { begin, converse, enc, endRequests, fcgiRequest, noNginx, pairs, parseRecords, record, scgiRequest, startNginx, PROTOCOLS } from "./gateway-peers.ts";

if (noNginx) console.warn("gateway.test.ts: nginx is not installed (scripts/install-test-deps.sh installs it); the nginx tests are skipped");

// ---- CGI programs (plain /bin/sh scripts in the test's directory) ----

const SCRIPTS: Record<string, string> = {
  // Its PID (a new program per request), its environment, a line on stderr.
  "env.cgi": `printf 'Content-Type: text/plain\\r\\n\\r\\n'\necho "pid $$"\necho "stdio $(readlink /proc/$$/fd/0) $(readlink /proc/$$/fd/1) $(awk -v i="$(readlink /proc/$$/fd/1 | tr -dc 0-9)" '$10 == i { t = 1 } END { print t ? "tcp" : "not-tcp" }' /proc/net/tcp /proc/net/tcp6)"\nenv\necho "stderr-marker-$$" >&2\n`,
  // The body back, byte for byte (exactly CONTENT_LENGTH: SCGI's connection stays open).
  "echo.cgi": `printf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\nhead -c "$CONTENT_LENGTH"\n`,
  // A status of its own, and a line on stderr.
  "exit.cgi": `printf 'Content-Type: text/plain\\r\\n\\r\\nbye\\n'\necho "complaint" >&2\nexit 3\n`,
  // Waits for the end of its input (FastCGI's empty STDIN record), then answers.
  "wait.cgi": `cat >/dev/null\nprintf 'Content-Type: text/plain\\r\\n\\r\\nread all\\n'\n`,
};

function writeScripts(dir: string): Record<string, string> {
  const paths = Object.fromEntries(Object.entries(SCRIPTS).map(([name, body]) => [name, writeExecutable(join(dir, name), `#!/bin/sh\n${body}`)]));
  paths["noexec.cgi"] = writeExecutable(join(dir, "noexec.cgi"), "#!/bin/sh\necho never\n", 0o644);
  return paths;
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return "";
  }
}

const SHA = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const connections = (server: Server) => server.stderr().match(/connection from/g)?.length ?? 0;

// ---- the matrix: each protocol, in a pool and with -f ----

const protocols = PROTOCOLS;
const modes = [
  { name: "-W 4", args: ["-W", "4"], max: 4 },
  { name: "-l -f", args: ["-l", "-f"], max: 100 },
];

describe.each(protocols)("$name", ({ flag, protocol }) => {
  describe.each(modes)("with $name", ({ args, max }) => {
    const start = (dir: string, program: string, extra: string[] = []) =>
      startServer([flag, ...args, ...extra, "-p", program, "-s", "0"], { env: { PATH: `/usr/local/bin:/usr/bin:/bin` } });

    test.skipIf(noNginx)("a GET through nginx gets the CGI's answer and the CGI variables", async () => {
      using dir = tempDir();
      const cgi = writeScripts(dir.path);
      await using server = await start(dir.path, cgi["env.cgi"]);
      await using nginx = await startNginx(dir.path, protocol, server.target);
      const long = "z".repeat(300); // over 127 bytes: FastCGI's 4-byte length form
      const response = await nginx.fetch(`/app/path?a=1&b=two&long=${long}`);
      expect(response.status).toBe(200);
      expect(response.headers.get("content-type")).toBe("text/plain");
      const lines = (await response.text()).split("\n");
      expect(lines).toContain("REQUEST_METHOD=GET");
      expect(lines).toContain(`QUERY_STRING=a=1&b=two&long=${long}`);
      expect(lines).toContain(`REQUEST_URI=/app/path?a=1&b=two&long=${long}`);
      expect(lines).toContain("REMOTE_ADDR=unix:"); // nginx's name for a client on its UNIX socket, passed on as nginx sent it
      expect(lines).toContain("GATEWAY_INTERFACE=CGI/1.1");
      expect(lines).toContain("PATH=/usr/local/bin:/usr/bin:/bin");
      expect(lines.some((l) => /^CONTENT_LENGTH=0?$/.test(l))).toBe(true);
      // socket's UCSPI variables would describe nginx's connection, not the client: left out.
      expect(lines.some((l) => /^(PROTO|TCPREMOTEIP|TCPLOCALPORT)=/.test(l))).toBe(false);
      // The CGI's stderr never reaches the HTTP answer.
      expect(lines.some((l) => l.includes("stderr-marker"))).toBe(false);
      const pid = lines[0].replace("pid ", "");
      // Zero-copy in a pool's SCGI: stdout is the connection itself (a TCP
      // socket); otherwise a pipe (Bun's are socket pairs, not TCP).
      const [, stdin, stdout, tcp] = lines[1].split(" ");
      // No body: stdin is /dev/null (FastCGI: a GET from nginx has an empty CONTENT_LENGTH, so its empty body is read
      // first; SCGI: what comes past CONTENT_LENGTH 0 never reaches the program).
      expect(stdin).toBe("/dev/null");
      expect(stdout).toMatch(/^(socket|pipe):\[\d+\]$/);
      expect(tcp).toBe(protocol === "scgi" && args[0] === "-W" ? "tcp" : "not-tcp");
      if (protocol === "fastcgi") {
        await waitFor("the CGI's stderr in nginx's error log", () => nginx.errorLog().includes(`FastCGI sent in stderr: "stderr-marker-${pid}`));
      } else {
        await waitFor("the CGI's stderr on socket's stderr", () => server.stderr().includes(`stderr-marker-${pid}`));
      }
    });

    test.skipIf(noNginx)("a 1 MB POST reaches the CGI byte-exact and its echo comes back byte-exact", async () => {
      using dir = tempDir();
      const cgi = writeScripts(dir.path);
      await using server = await start(dir.path, cgi["echo.cgi"]);
      await using nginx = await startNginx(dir.path, protocol, server.target);
      const body = crypto.getRandomValues(new Uint8Array(1 << 20));
      for (let i = 0; i < body.length; i += 65536) body.set(crypto.getRandomValues(new Uint8Array(65536)), i);
      const response = await nginx.fetch(`/echo`, { method: "POST", body });
      expect(response.status).toBe(200);
      const answer = new Uint8Array(await response.arrayBuffer());
      expect(answer.length).toBe(body.length);
      expect(SHA(answer)).toBe(SHA(body));
    });

    test.skipIf(noNginx)("8 concurrent clients, 400 requests: every answer is its own request's", async () => {
      using dir = tempDir();
      const cgi = writeScripts(dir.path);
      await using server = await start(dir.path, cgi["echo.cgi"]);
      await using nginx = await startNginx(dir.path, protocol, server.target);
      const failures: string[] = [];
      let served = 0;
      await Promise.all(
        Array.from({ length: 8 }, async (_, client) => {
          for (let i = 0; i < 50; i++) {
            const body = `client ${client} request ${i} ${"x".repeat(i * 37)}`;
            const response = await nginx.fetch(`/c`, { method: "POST", body });
            const text = await response.text();
            if (response.status !== 200 || text !== body) failures.push(`${response.status} ${text.slice(0, 40)}`);
            else served++;
          }
        }),
      );
      expect(failures).toEqual([]);
      expect(served).toBe(400);
    }, 60000);

    test.skipIf(noNginx)("a program that cannot be executed: 502 through nginx, one line on socket's stderr", async () => {
      using dir = tempDir();
      const cgi = writeScripts(dir.path);
      await using server = await start(dir.path, cgi["noexec.cgi"]);
      await using nginx = await startNginx(dir.path, protocol, server.target);
      const response = await nginx.fetch(`/x`, { method: "POST", body: "some body" });
      expect(response.status).toBe(502);
      await waitFor("the log line", () => server.stderr().includes("socket: cannot run"));
      const lines = server.stderr().split("\n").filter((l) => l.startsWith("socket: cannot run"));
      expect(lines).toEqual([`socket: cannot run ${cgi["noexec.cgi"]}: permission denied: not an executable file (EACCES)`]);
      // The server goes on: the same server answers again (and says so again).
      expect((await nginx.fetch(`/y`)).status).toBe(502);
    });

    test("malformed requests sent directly close that connection; the server goes on", async () => {
      using dir = tempDir();
      const cgi = writeScripts(dir.path);
      await using server = await start(dir.path, cgi["env.cgi"]);
      const bad: [string, Uint8Array][] =
        protocol === "scgi"
          ? [
              ["not a netstring", enc.encode("GET / HTTP/1.0\r\n\r\n")],
              ["a length of too many digits", enc.encode("99999999:")],
              ["a header over 64 KiB", enc.encode("70000:CONTENT_LENGTH\0")],
              ["no comma", enc.encode("28:CONTENT_LENGTH\x000\x00SCGI\x001\x00;")],
              ["CONTENT_LENGTH not first", scgiRequest([["SCGI", "1"], ["CONTENT_LENGTH", "0"]])],
              ["no SCGI=1", scgiRequest([["CONTENT_LENGTH", "0"], ["X", "1"]])],
              ["a variable twice", scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"], ["SCGI", "1"]])],
              ["a non-numeric CONTENT_LENGTH", scgiRequest([["CONTENT_LENGTH", "-5"], ["SCGI", "1"]])],
              ["an end in the middle of the header", enc.encode("100:CONTENT_LENGTH\x000\x00")],
            ]
          : [
              ["a record of version 2", Buffer.from([2, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])],
              ["a STDOUT record from the web server", record(6, 1, enc.encode("hi"))],
              ["BEGIN_REQUEST with request id 0", begin(0)],
              ["PARAMS over 64 KiB", Buffer.concat([begin(1), ...Array.from({ length: 2 }, () => record(4, 1, pairs([["X", "y".repeat(40000)]])))])],
              ["a truncated name-value pair", Buffer.concat([begin(1), record(4, 1, Buffer.from([5, 1, 65])), record(4, 1)])],
              ["STDIN before the end of PARAMS", Buffer.concat([begin(1), record(5, 1, enc.encode("body"))])],
              ["an end in the middle of a record", Buffer.concat([begin(1), record(4, 1, pairs([["A", "b"]])).subarray(0, 6)])],
            ];
      for (const [what, bytes] of bad) {
        const reply = await exchange(server.target, bytes);
        expect({ what, data: reply.data.toString() }).toEqual({ what, data: "" });
      }
      await waitFor("a -v line per bad request", () => (server.stderr().match(new RegExp(`^${protocol}: `, "gm"))?.length ?? 0) >= bad.length);
      expect(server.stderr()).not.toMatch(/\n\s+at |internal error/);
      const good =
        protocol === "scgi"
          ? (await exchange(server.target, scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"], ["REQUEST_METHOD", "GET"]]))).data.toString()
          : parseRecords((await exchange(server.target, fcgiRequest(1, [["REQUEST_METHOD", "GET"]]))).data).stdout;
      expect(good).toContain("REQUEST_METHOD=GET");
    });

    if (protocol === "scgi" && args[0] === "-W") test("--timeout keeps a pool's SCGI zero-copy on TCP (the kernel's idle times are watched)", async () => {
      using dir = tempDir();
      const cgi = writeScripts(dir.path);
      await using server = await start(dir.path, cgi["env.cgi"], ["--timeout", "30"]);
      const text = (await exchange(server.target, scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"]]))).data.toString();
      const [, stdin, , tcp] = (text.split("\n").find((l) => l.startsWith("stdio ")) ?? "").split(" ");
      expect(stdin).toBe("/dev/null");
      expect(tcp).toBe("tcp");
    });

    test("variables that steer the loader, libc or a shell never reach the program", async () => {
      using dir = tempDir();
      const cgi = writeScripts(dir.path);
      await using server = await start(dir.path, cgi["env.cgi"]);
      const hostile: [string, string][] = [
        ["LD_PRELOAD", "/nonexistent/evil.so"],
        ["LD_LIBRARY_PATH", "/evil"],
        ["PATH", "/evil"],
        ["BASH_ENV", "/evil/rc"],
        ["ENV", "/evil/rc"],
        ["IFS", "/"],
        ["GCONV_PATH", "/evil"],
        ["MALLOC_CHECK_", "3"],
        ["BASH_FUNC_x%%", "() { :; }"],
        ["HTTP_PROXY", "http://evil:1"],
        ["BAD-NAME", "1"],
        ["9LIVES", "1"],
        ["HTTP_X_FINE", "kept"],
      ];
      const text =
        protocol === "scgi"
          ? (await exchange(server.target, scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"], ...hostile]))).data.toString()
          : parseRecords((await exchange(server.target, fcgiRequest(1, hostile))).data).stdout;
      const lines = text.split("\n");
      expect(lines).toContain("HTTP_X_FINE=kept");
      expect(lines).toContain("PATH=/usr/local/bin:/usr/bin:/bin");
      // PATH is socket's own (checked above); the others are not set at all.
      for (const [name] of hostile.slice(0, -1)) {
        if (name !== "PATH") expect(lines.filter((l) => l.startsWith(`${name}=`))).toEqual([]);
      }
    });

    test("a client that connects and says nothing is dropped after --timeout; the server goes on", async () => {
      using dir = tempDir();
      const cgi = writeScripts(dir.path);
      await using server = await start(dir.path, cgi["env.cgi"], ["--timeout", "0.3"]);
      const silent = await exchange(server.target, "", { halfClose: false, ms: 5000 });
      expect(silent.data.length).toBe(0);
      await waitFor("the -v line", () => server.stderr().includes(`${protocol}: no complete`));
      const good =
        protocol === "scgi"
          ? (await exchange(server.target, scgiRequest([["CONTENT_LENGTH", "0"], ["SCGI", "1"]]))).data.toString()
          : parseRecords((await exchange(server.target, fcgiRequest(1, [["A", "b"]]))).data).stdout;
      expect(good).toContain("GATEWAY_INTERFACE=CGI/1.1");
    });

    test("--timeout: a request whose body stops coming is closed and its program ended", async () => {
      using dir = tempDir();
      const cgi = writeScripts(dir.path);
      await using server = await start(dir.path, cgi["echo.cgi"], ["--timeout", "0.4"]);
      // CONTENT_LENGTH promises 1000 bytes; 3 come, then nothing (and no EOF).
      const request =
        protocol === "scgi"
          ? scgiRequest([["CONTENT_LENGTH", "1000"], ["SCGI", "1"]], enc.encode("abc"))
          : Buffer.concat([begin(1), record(4, 1, pairs([["CONTENT_LENGTH", "1000"]])), record(4, 1), record(5, 1, enc.encode("abc"))]);
      const reply = await exchange(server.target, request, { halfClose: false, ms: 8000 });
      expect(reply.data.includes(Buffer.from("abc"))).toBe(false);
      // The idle timeout and the body's own deadline both fall due about --timeout after the last byte; either may say it.
      await waitFor("the -v line", () => /connection timed out|body came too slowly/.test(server.stderr()));
      await waitFor("the program to be gone", () => !descendantsOf(server.proc.pid).some((pid) => commandLine(pid).includes("echo.cgi")));
    });

    test("a header that arrives in pieces (the length prefix split) is read exactly, body intact", async () => {
      using dir = tempDir();
      const cgi = writeScripts(dir.path);
      await using server = await start(dir.path, cgi["echo.cgi"]);
      const body = enc.encode("the body, after the header");
      const request =
        protocol === "scgi"
          ? scgiRequest([["CONTENT_LENGTH", String(body.length)], ["SCGI", "1"]], body)
          : fcgiRequest(1, [["CONTENT_LENGTH", String(body.length)]], body);
      const talk = await converse(server.target);
      // Each piece read by the server before the next is sent: a worker's MSG_PEEK sees only the first digit.
      for (const piece of [request.subarray(0, 1), request.subarray(1, 5), request.subarray(5)]) {
        talk.send(piece);
        await serverHasRead(talk, server.target as number);
      }
      const data = await talk.until("the answer", (d) => (protocol === "scgi" ? d.includes(Buffer.from(body)) : endRequests(parseRecords(d)).length > 0));
      const answer = protocol === "scgi" ? data.toString() : parseRecords(data).stdout;
      expect(answer.split("\r\n\r\n")[1]).toBe(new TextDecoder().decode(body));
      talk.close();
    });

    if (protocol === "fastcgi") {
      test("END_REQUEST carries the program's exit status; its stderr comes in STDERR records", async () => {
        using dir = tempDir();
        const cgi = writeScripts(dir.path);
        await using server = await start(dir.path, cgi["exit.cgi"]);
        const parsed = parseRecords((await exchange(server.target, fcgiRequest(5, [["A", "b"]]))).data);
        expect(parsed.stdout).toContain("bye");
        expect(parsed.stderr).toBe("complaint\n");
        expect(endRequests(parsed)).toEqual([{ id: 5, app: 3, protocol: 0 }]);
        // The empty STDOUT record comes before END_REQUEST.
        const types = parsed.records.map((r) => `${r.type}:${r.content.length}`);
        expect(types.slice(-2)).toEqual(["6:0", "3:8"]);
      });

      test.skipIf(noNginx)("fastcgi_keep_conn on: several requests on one connection, a program each", async () => {
        using dir = tempDir();
        const cgi = writeScripts(dir.path);
        await using server = await start(dir.path, cgi["env.cgi"]);
        await using nginx = await startNginx(dir.path, protocol, server.target, { keepConn: true });
        const pids = new Set<string>();
        for (let i = 0; i < 5; i++) {
          const response = await nginx.fetch(`/k${i}`);
          expect(response.status).toBe(200);
          pids.add((await response.text()).split("\n")[0]);
        }
        expect(pids.size).toBe(5);
        expect(connections(server)).toBe(1);
      });

      test("GET_VALUES, unknown types, other roles, a second request, ABORT_REQUEST", async () => {
        using dir = tempDir();
        const cgi = writeScripts(dir.path);
        await using server = await start(dir.path, cgi["wait.cgi"]);
        const talk = await converse(server.target);
        talk.send(record(9, 0, pairs([["FCGI_MAX_CONNS", ""], ["FCGI_MAX_REQS", ""], ["FCGI_MPXS_CONNS", ""], ["OTHER", ""]])));
        talk.send(record(99, 0, enc.encode("what")));
        talk.send(begin(7, 2, true)); // the authorizer role
        let data = await talk.until("three answers", (d) => parseRecords(d).records.length >= 3);
        const [values, unknown] = parseRecords(data).records; // the third, END_REQUEST UNKNOWN_ROLE, is checked below
        expect(values.type).toBe(10);
        expect(values.content).toEqual(Buffer.from(pairs([["FCGI_MAX_CONNS", String(max)], ["FCGI_MAX_REQS", String(max)], ["FCGI_MPXS_CONNS", "0"]])));
        expect([unknown.type, unknown.content[0]]).toEqual([11, 99]);
        expect(endRequests(parseRecords(data))).toEqual([{ id: 7, app: 0, protocol: 3 }]);
        // Request 1 runs (its program waits for the end of STDIN); request 2 cannot be multiplexed.
        talk.send(Buffer.concat([begin(1, 1, true), record(4, 1, pairs([["A", "b"]])), record(4, 1), record(5, 1, enc.encode("part"))]));
        talk.send(begin(2, 1, true));
        data = await talk.until("CANT_MPX_CONN", (d) => endRequests(parseRecords(d)).length >= 2);
        expect(endRequests(parseRecords(data))[1]).toEqual({ id: 2, app: 0, protocol: 1 });
        talk.send(record(5, 1));
        data = await talk.until("request 1's end", (d) => endRequests(parseRecords(d)).length >= 3);
        expect(endRequests(parseRecords(data))[2]).toEqual({ id: 1, app: 0, protocol: 0 });
        expect(parseRecords(data).stdout).toContain("read all");
        // Kept: request 3 on the same connection, aborted while its program waits.
        // CONTENT_LENGTH given: the program starts at the end of PARAMS (without one, at the end of the body).
        talk.send(Buffer.concat([begin(3, 1, true), record(4, 3, pairs([["A", "b"], ["CONTENT_LENGTH", "0"]])), record(4, 3)]));
        await waitFor("request 3's program to run", () => descendantsOf(server.proc.pid).some((pid) => commandLine(pid).includes("wait.cgi")));
        talk.send(record(2, 3));
        data = await talk.until("request 3's end", (d) => endRequests(parseRecords(d)).length >= 4);
        const aborted = endRequests(parseRecords(data))[3];
        expect(aborted.id).toBe(3);
        expect(parseRecords(data).stdout.match(/read all/g)?.length).toBe(1);
        talk.close();
        await talk.closed();
        expect(connections(server)).toBe(1);
      });
    }
  });
});

test.skipIf(noNginx)("FastCGI -W 1: a kept idle connection gives its worker up to a connection waiting for one", async () => {
  using dir = tempDir();
  const cgi = writeScripts(dir.path);
  await using server = await startServer(["--fastcgi", "-W", "1", "-p", cgi["echo.cgi"], "-s", "0"]);
  await using nginx = await startNginx(dir.path, "fastcgi", server.target, { keepConn: true });
  // Two at once: nginx opens a second connection, which waits in the listen
  // backlog while the only worker holds the first, kept one. Without the
  // hand-over it would wait for the 30 s header timeout (past this test's).
  const bodies = ["first", "second", "third"];
  const answers = await Promise.all(bodies.map((body) => nginx.fetch(`/w`, { method: "POST", body }).then((r) => r.text())));
  expect(answers).toEqual(bodies);
  expect(connections(server)).toBeGreaterThan(1);
  expect(server.stderr()).toContain("fastcgi: closing an idle kept connection: another connection is waiting");
});

describe("on a UNIX socket", () => {
  for (const { flag, protocol } of protocols) {
    test.skipIf(noNginx)(`${protocol} -W 2 behind nginx's ${protocol}_pass unix:`, async () => {
      using dir = tempDir();
      const cgi = writeScripts(dir.path);
      const path = join(dir.path, "app.sock");
      await using server = await startServer([flag, "-W", "2", "-p", cgi["echo.cgi"], "-s", path]);
      await using nginx = await startNginx(dir.path, protocol, path);
      const body = crypto.getRandomValues(new Uint8Array(50000));
      const response = await nginx.fetch(`/u`, { method: "POST", body });
      expect(response.status).toBe(200);
      expect(SHA(new Uint8Array(await response.arrayBuffer()))).toBe(SHA(body));
      expect(server.stderr()).toContain("unix: connection from");
    });
  }
});

describe("the command line", () => {
  test.each([
    [["--scgi", "-s", "0", "-p", "app | tee log"], "put the command in a script"],
    [["--fastcgi", "-s", "0", "-p", "echo hi"], "'echo' is a shell keyword or builtin"],
    [["--scgi", "--fastcgi", "-s", "0", "-p", "app"], "mutually exclusive"],
    [["--scgi", "-s", "0"], "--scgi needs -s and -p (or --cgi-root)"],
    [["--fastcgi", "-c", "-s", "0", "-p", "app"], "cannot be combined with -c"],
    [["--scgi", "-q", "-s", "0", "-p", "app"], "cannot be combined with -q"],
  ])("%p is a usage error", async (args, message) => {
    const { status, stderr } = await run(args);
    expect(status).toBe(15);
    expect(stderr).toContain(message);
    expect(stderr).not.toContain(" at ");
  });

  test("--help lists both", async () => {
    const { stdout } = await run(["--help"]);
    expect(stdout).toContain("--scgi");
    expect(stdout).toContain("--fastcgi");
  });
});
