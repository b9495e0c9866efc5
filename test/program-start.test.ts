// Starting programs, from src/ directly: the -p command read once (its
// words, whether sh is needed), a CGI's environment built from a request's
// variables (what is inherited, what a request may set, bytes kept as
// bytes), and startProcess itself: posix_spawn with a directory, a session
// of its own and an environment value that is not UTF-8.
import { describe, expect, test } from "bun:test";
import { closeSync, openSync, readFileSync, realpathSync } from "node:fs";
import { commandWords, directProgram, programFor, programNameProblem, shellNeed } from "../src/connection/command.ts";
import { Inherited, startProcess } from "../src/connection/process.ts";
import { canSpawn, CStrings } from "../src/system/spawn.ts";
import { CString, type Pointer } from "bun:ffi";
import { cgiEnvironment, environmentRule, prepareCgi, variable, type CgiSource, type Variable } from "../src/request/cgi.ts";
import { tempDir } from "./harness.ts";

describe("the -p command, read once", () => {
  test("plain words are run as they are; anything sh would interpret goes through sh", () => {
    expect(commandWords("  cat   -u\t-n ")).toEqual({ words: ["cat", "-u", "-n"], shellNeed: undefined });
    expect(programFor("cat -u")).toEqual({ argv: [Bun.which("cat")!, "-u"], argv0: "cat", command: "cat -u" });
    for (const command of ["echo $HOME", "cat *.txt", "a=1 cat", "cd /tmp", "cat 'x'", "cat > f", "cat | wc"]) {
      expect(shellNeed(command)).toBeString();
      expect(programFor(command)).toEqual({ argv: ["/bin/sh", "-c", command], argv0: "sh", command });
    }
    expect(programFor("no-such-program-anywhere x").argv).toEqual(["/bin/sh", "-c", "no-such-program-anywhere x"]);
  });

  test("a gateway's program is its words even when not found (the start reports ENOENT)", () => {
    expect(directProgram("no-such-program-anywhere --x")).toEqual({ argv: ["no-such-program-anywhere", "--x"], argv0: "no-such-program-anywhere", command: "no-such-program-anywhere --x" });
    expect(directProgram("/bin/cat -u").argv).toEqual(["/bin/cat", "-u"]);
  });

  test("a program name longer than PATH_MAX is a problem; one the shell makes is not", () => {
    expect(programNameProblem(`/${"a".repeat(5000)} x`)).toContain("PATH_MAX");
    expect(programNameProblem(`echo ${"a".repeat(5000)}`)).toBeUndefined();
    expect(programNameProblem(`$X${"a".repeat(5000)}`)).toBeUndefined();
  });
});

describe("a CGI's environment", () => {
  const own = { PATH: "/usr/bin", HOME: "/root", HTTPS: "on", REMOTE_USER: "admin", HTTP_PROXY: "http://evil", KEEP: "1", GATEWAY_INTERFACE: "x" };
  const lines: string[] = [];
  const log = (line: string) => lines.push(line);

  test("socket's own variables are inherited, but none a request may set, nor a --pass-env name", () => {
    const rule = environmentRule(["KEEP"], own);
    expect(rule.inherited).toEqual({ PATH: "/usr/bin", HOME: "/root" });
    expect(environmentRule([], own).inherited).toEqual({ PATH: "/usr/bin", HOME: "/root", KEEP: "1" });
  });

  test("the request's variables the table or --pass-env allow, as the bytes they came as; the rest dropped on one line", () => {
    lines.length = 0;
    const rule = environmentRule(["KEEP"], own);
    const cafe = Buffer.from([0x2f, 0x63, 0x61, 0x66, 0xe9]);
    const variables: Variable[] = [
      ["REQUEST_METHOD", "GET"],
      variable("PATH_INFO", cafe),
      ["KEEP", "2"],
      ["LD_PRELOAD", "/tmp/x.so"],
      ["HTTP_PROXY", "http://evil"],
      ["QUERY_STRING", "a\0b"],
    ];
    const env = cgiEnvironment(variables, rule, log);
    expect(env.inherited).toBe(rule.inherited);
    expect(env.own).toEqual([["REQUEST_METHOD", "GET"], ["PATH_INFO", cafe], ["KEEP", "2"], ["GATEWAY_INTERFACE", "CGI/1.1"]]);
    expect(lines).toEqual(["dropped request variables not allowed: LD_PRELOAD, HTTP_PROXY, QUERY_STRING (a NUL in its value)"]);
    expect(cgiEnvironment([["GATEWAY_INTERFACE", "CGI/1.2"]], rule, log).own).toEqual([["GATEWAY_INTERFACE", "CGI/1.2"]]);
  });

  test("prepareCgi: the body limit first, then the program, its directory and environment, and the note for --slow", () => {
    const notes: string[] = [];
    const source: CgiSource = { program: { command: directProgram("/bin/cat -u") }, rule: environmentRule([], own), note: (r) => notes.push(r) };
    const options = { verbose: false, maxBody: 10 };
    expect("answer" in prepareCgi(source, [["CONTENT_LENGTH", "11"]], options, "scgi")).toBe(true);
    expect(notes).toEqual([]);
    const launch = prepareCgi(source, [["CONTENT_LENGTH", "10"], ["REQUEST_METHOD", "POST"], ["REQUEST_URI", "/x?y"]], options, "scgi");
    if ("answer" in launch) throw new Error("refused");
    expect(launch.program.argv).toEqual(["/bin/cat", "-u"]);
    expect(launch.cwd).toBe("/bin");
    expect(launch.env.own).toContainEqual(["REQUEST_URI", "/x?y"]);
    expect(notes).toEqual(["POST /x?y"]);
  });
});

describe("C string tables", () => {
  test("the fixed strings, then each call's own (text, other bytes, none) in the one NULL-ended table", () => {
    const table = new CStrings(["fixed", new Uint8Array([0x41, 0x42])]);
    const read = (t: BigUint64Array) => {
      const out: string[] = [];
      for (let i = 0; t[i] !== 0n; i++) out.push(new CString(Number(t[i]) as Pointer).toString());
      return out;
    };
    for (const extra of [[], ["A=1", "B=é", "C=\u{1f600}", "D="], ["A=1", Uint8Array.from([0x42, 0x3d, 0x43])], ["x".repeat(70_000)]]) {
      const got = read(table.with(extra));
      expect(got).toEqual(["fixed", "AB", ...extra.map((s) => (typeof s === "string" ? s : Buffer.from(s).toString("utf8")))]);
    }
  });
});

describe.skipIf(!canSpawn())("startProcess", () => {
  const script = 'printf "%s" "$RAW" | od -An -tx1 | tr -d " \\n"; echo; pwd; ps -o pid=,pgid=,sid= -p $$';

  test.each(["blocking", "evented"] as const)("%s: the directory, a session of its own and raw bytes in the environment", async (engine) => {
    using dir = tempDir();
    const out = `${dir.path}/out`;
    const fd = openSync(out, "w");
    const env = { inherited: new Inherited({ PATH: process.env.PATH ?? "/usr/bin:/bin" }), own: [["RAW", new Uint8Array([0x41, 0xe9, 0xff])]] as const };
    const spec = { argv: ["/bin/sh", "-c", script], argv0: "sh", cwd: dir.path, env, ownGroup: true, stdio: ["ignore", fd, 2] as const };
    const proc = engine === "blocking" ? startProcess(spec, engine) : startProcess(spec, engine);
    closeSync(fd);
    expect(await proc.exited).toBe(0);
    expect(proc.exitCode).toBe(0);
    const [hex, cwd, ids] = readFileSync(out, "utf8").trim().split("\n");
    expect(hex).toBe("41e9ff");
    expect(cwd).toBe(realpathSync(dir.path));
    const [pid, pgid, sid] = ids.trim().split(/\s+/).map(Number);
    expect([pgid, sid]).toEqual([pid, pid]);
    expect(pid).toBe(proc.pid);
  });

  test("evented with bytes in its environment: its pipes carry a body in and the answer out, and end", async () => {
    const env = { inherited: new Inherited({ PATH: process.env.PATH ?? "/usr/bin:/bin" }), own: [["RAW", new Uint8Array([0xe9])]] as const };
    const spec = { argv: ["/bin/sh", "-c", 'printf "%s:" "$RAW" | od -An -tx1 | tr -d " \\n"; cat; echo err >&2'], argv0: "sh", env, ownGroup: false };
    const proc = startProcess({ ...spec, stdio: ["pipe", "pipe", "pipe"] }, "evented");
    proc.stdin!.write(new TextEncoder().encode("body"));
    await proc.stdin!.flush();
    await proc.stdin!.end();
    const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
    expect(out).toBe("e93abody");
    expect(err).toBe("err\n");
    expect(await proc.exited).toBe(0);
  });

  test("blocking: stop() ends a program that ignores TERM within its grace, and its wait says how", async () => {
    const env = { inherited: new Inherited({ PATH: process.env.PATH ?? "/usr/bin:/bin" }), own: [] };
    const proc = startProcess({ argv: ["/bin/sh", "-c", "trap '' TERM; sleep 30"], argv0: "sh", env, ownGroup: true, stdio: ["ignore", "ignore", 2] }, "blocking");
    expect(await proc.wait(50)).toBe(false);
    const started = Date.now();
    proc.stop(200);
    expect(await proc.wait(5000)).toBe(true);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(proc.signalCode).toBe("SIGKILL");
    expect(await proc.exited).toBe(128 + 9);
  });

  test("a program that cannot be executed throws with the errno's name, as Bun.spawn does", () => {
    const env = { inherited: new Inherited({}), own: [] };
    let code: unknown;
    try {
      startProcess({ argv: ["/nonexistent/program"], argv0: "program", env, ownGroup: false, stdio: [0, 1, 2] }, "blocking");
    } catch (e) {
      code = e instanceof Error && "code" in e ? e.code : e;
    }
    expect(code).toBe("ENOENT");
  });
});
