// How a gateway starts its CGI: in its script's directory, leading a
// session and process group of its own (never the terminal's), and with
// an environment value that is not UTF-8 passed as its bytes by the start
// itself: the CGI's process executes once, the CGI, never socket first.
import { describe, expect, test } from "bun:test";
import { readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { exchange, startServer, tempDir, waitFor, writeExecutable } from "./harness.ts";
import { begin, parseRecords, record } from "./gateway-peers.ts";

// Its pid, process group and session, its directory, and PATH_INFO's bytes in hex.
const IDS_CGI = `#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "ids $(ps -o pid=,pgid=,sid= -p $$ | tr -s ' ')"
echo "cwd $(pwd)"
echo "hex $(printf %s "$PATH_INFO" | od -An -tx1 | tr -d ' \\n')"
`;
const CAFE = Buffer.from("/caf\xe9", "latin1");

/** Name-value pairs whose values are bytes. */
function bytePairs(vars: [string, Uint8Array][]): Buffer {
  return Buffer.concat(vars.flatMap(([n, v]) => [Buffer.from([n.length, v.length]), Buffer.from(n), Buffer.from(v)]));
}

/** One request of each protocol with PATH_INFO as bytes; the CGI's answer. */
async function ask(protocol: "fastcgi" | "scgi", target: number | string): Promise<string> {
  if (protocol === "fastcgi") {
    const params = bytePairs([["REQUEST_METHOD", Buffer.from("GET")], ["PATH_INFO", CAFE], ["CONTENT_LENGTH", Buffer.from("0")]]);
    const reply = await exchange(target, Buffer.concat([begin(1), record(4, 1, params), record(4, 1), record(5, 1)]));
    return parseRecords(reply.data).stdout;
  }
  const header = Buffer.concat([Buffer.from("CONTENT_LENGTH\x000\x00SCGI\x001\x00PATH_INFO\x00"), CAFE, Buffer.from([0])]);
  const reply = await exchange(target, Buffer.concat([Buffer.from(`${header.length}:`), header, Buffer.from(",")]));
  return reply.data.toString();
}

/** What the CGI said about itself. */
function described(text: string): { pid: number; pgid: number; sid: number; cwd: string; hex: string } {
  const [pid, pgid, sid] = (text.match(/^ids (.*)$/m)?.[1] ?? "").trim().split(" ").map(Number);
  return { pid, pgid, sid, cwd: text.match(/^cwd (.*)$/m)?.[1] ?? "", hex: text.match(/^hex (.*)$/m)?.[1] ?? "" };
}

describe.each([
  ["fastcgi", "-W 2", ["-W", "2"]],
  ["scgi", "-W 2", ["-W", "2"]],
  ["fastcgi", "-l -f", ["-l", "-f"]],
  ["scgi", "-l -f", ["-l", "-f"]],
] as const)("--%s %s", (protocol, _name, args) => {
  test("the CGI runs in its script's directory, leads its own session and group, and gets PATH_INFO's bytes", async () => {
    using dir = tempDir();
    const cgi = writeExecutable(join(dir.path, "ids.cgi"), IDS_CGI);
    await using server = await startServer([`--${protocol}`, ...args, "-p", cgi, "-s", "0"]);
    const cgiSaid = described(await ask(protocol, server.target));
    expect(cgiSaid.hex).toBe("2f636166e9");
    expect(cgiSaid.cwd).toBe(realpathSync(dir.path));
    expect(cgiSaid.pid).toBeGreaterThan(0);
    expect(cgiSaid.pgid).toBe(cgiSaid.pid);
    expect(cgiSaid.sid).toBe(cgiSaid.pid);
  });
});

describe.each(["fastcgi", "scgi"] as const)("--%s -W 1 under strace", (protocol) => {
  test("a CGI with bytes that are not UTF-8 in its environment is executed once: the CGI, not socket first", async () => {
    using dir = tempDir();
    const cgi = writeExecutable(join(dir.path, "ids.cgi"), IDS_CGI);
    const trace = join(dir.path, "trace");
    await using server = await startServer([`--${protocol}`, "-W", "1", "-p", cgi, "-s", "0"], {
      wrap: ["strace", "-f", "-qq", "-e", "trace=execve", "-o", trace],
      startMs: 20000,
    });
    const cgiSaid = described(await ask(protocol, server.target));
    expect(cgiSaid.hex).toBe("2f636166e9");
    await waitFor("the CGI's exec in the trace", () => readFileSync(trace, "latin1").includes(`execve("${cgi}"`));
    const execs = readFileSync(trace, "latin1").split("\n").filter((line) => new RegExp(`^${cgiSaid.pid} +execve\\(`).test(line));
    expect(execs).toHaveLength(1);
    expect(execs[0]).toMatch(new RegExp(`^${cgiSaid.pid} +execve\\("${cgi}"`));
  }, 30000);
});
