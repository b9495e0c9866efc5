// The command line as a fuzzer writes it: options of src/cli/table.ts with
// hostile values (empty, huge, negative, NaN, 1e309, bytes that are not
// UTF-8, very long, repeated, after the operands), unknown hosts, ports and
// UNIX paths too long for sun_path. Every run must end, within a bound, with
// socket's own lines on stderr and a defined status, never a stack trace or
// Bun's crash report; one that serves must say so (-v) and end on TERM as
// socket(1) does. A fixed seed: a failure names the command line to rerun.
import { describe, expect, test } from "bun:test";
import { optionTable } from "../src/cli/table.ts";
import { launch, random, tempDir, waitFor } from "./harness.ts";

type Word = string | Uint8Array;

const NOT_UTF8 = [Uint8Array.of(0xff, 0xfe, 0x41), Uint8Array.of(0x2f, 0xc3, 0x28, 0x2f, 0x78), Uint8Array.of(0x31, 0x80)];
const LONG_PATH = `./${"a".repeat(200)}`;
const VALUES: Word[] = [
  "", "0", "1", "2", "-1", "NaN", "1e309", "99999999999999999999", "0.0001", "1.5", "Infinity", " 1", "0x10",
  "\u0663", "a".repeat(5000), "\u{1F600}", LONG_PATH, "127.0.0.1", "::ffff:127.0.0.1", "/nonexistent/x", "nosuch.invalid",
  "%s%n", "-", "--", "1:0", "0:2", "web", "log", "spare", "burst", "10.0.0.0/8", "::ffff:10.0.0.0/104", "660", "root",
  ...NOT_UTF8,
];
/** A value each option takes, so that some command lines get past the parser to the bind, the connect, the pool. */
const PLAUSIBLE: Record<string, string> = {
  program: "cat", bind: "127.0.0.1", log: "log", "pid-file": "pid", workers: "1:2", "max-requests": "3", "idle-timeout": "1",
  ramp: "burst", grace: "1", timeout: "5", "request-timeout": "5", "send-timeout": "5", "max-per-source": "3",
  "defer-accept": "1", mode: "660", user: "root", group: "0", "cgi-root": "/tmp", "pass-env": "FOO", "max-body": "1k",
  "cgi-stderr": "log", status: "0", slow: "1", allow: "127.0.0.0/8", deny: "::ffff:10.0.0.0/104",
};
/** A server's: any free port, a path here, paths that cannot be bound, ports and names that are not ports. */
const SERVER_OPERANDS: Word[][] = [["0"], ["0"], ["./s"], ["./s"], [LONG_PATH], ["/nonexistent/dir/s"], ["1e309"], ["65536"], ["nosuchservice"], [NOT_UTF8[1]], []];
/** A client's: hosts and ports nothing listens on here (port 1 refused), names that do not resolve, paths with no socket. */
const CLIENT_OPERANDS: Word[][] = [
  ["127.0.0.1", "1"], ["::1", "1"], ["nosuch.invalid", "80"], ["127.0.0.1", "65536"], ["127.0.0.1", "nosuchservice"],
  ["127.0.0.1", "0"], ["localhost", "-1"], ["", ""], ["./s"], [LONG_PATH], ["/nonexistent/dir/s"], ["a", "b", "c"], ["127.0.0.1", "\u0663"],
];
/** Where a command line starts: nothing, or a server, a -p server, a pool, a gateway, a pool with its page. */
const SKELETONS: Word[][] = [
  [], [], [], ["-s", "-l", "-f", "-p", "cat"], ["-s", "-p", "cat", "-W", "1"], ["-s", "--scgi", "-p", "/bin/cat"],
  ["-s", "--fastcgi", "--cgi-root", "/tmp", "-W", "1"], ["-s", "-p", "cat", "-W", "1", "--status", "0"],
];
// -b detaches (a daemon outlives the run); --help and --version print pages.
const SKIPPED = new Set(["background", "help", "version"]);
const OPTIONS = Object.entries(optionTable).filter(([name]) => !SKIPPED.has(name));

function pick<T>(next: () => number, from: readonly T[]): T {
  return from[Math.floor(next() * from.length)];
}

/** One generated command line: a few options (short or long, values attached or not), operands, maybe more options after them. */
function commandLine(next: () => number): Word[] {
  const options = () => {
    for (let n = Math.floor(next() * 4); n > 0; n--) {
      const [name, def] = pick(next, OPTIONS);
      const short = "alias" in def && next() < 0.6 ? `-${def.alias}` : `--${name}`;
      if (def.type === "boolean") {
        words.push(short);
      } else {
        const value = next() < 0.5 && name in PLAUSIBLE ? PLAUSIBLE[name] : pick(next, VALUES);
        if (typeof value === "string" && next() < 0.3) words.push(short.startsWith("--") ? `${short}=${value}` : short + value);
        else words.push(short, value);
      }
    }
  };
  const words: Word[] = [...pick(next, SKELETONS)];
  const server = words.length > 0 || next() < 0.4;
  if (server && words.length === 0) words.push("-s");
  options();
  if (next() < 0.1) words.push("--");
  words.push(...pick(next, server === next() < 0.85 ? SERVER_OPERANDS : CLIENT_OPERANDS));
  if (next() < 0.3) options();
  return words;
}

/** Bytes that are not UTF-8 cannot be a spawn argument: sh's printf makes them. */
function viaShell(words: Word[]): { args: string[]; wrap?: string[] } {
  if (words.every((w) => typeof w === "string")) return { args: words as string[] };
  const octal = (w: Word) => [...(typeof w === "string" ? new TextEncoder().encode(w) : w)].map((b) => `\\0${b.toString(8)}`).join("");
  const script = `exec "$0"${words.map((w) => ` "$(printf '%b' '${octal(w)}')"`).join("")}`;
  return { args: [], wrap: ["sh", "-c", script] };
}

const show = (words: Word[]) =>
  words.map((w) => (typeof w === "string" ? JSON.stringify(w.length > 40 ? `${w.slice(0, 20)}...(${w.length})` : w) : `<${Buffer.from(w).toString("hex")}>`)).join(" ");

/** socket's own lines: an error, the usage line, socket(1)'s remarks, -v's lines. */
const OWN_LINE = /^(socket: |Usage: socket |It does not make sense |inet: |unix: |pool: |status: \d+\/\d+|Termination signal occured, exiting$|$)/;
const BROKEN = /internal error|\n\s+at |panic|Bun v\d|oh no|Segmentation fault|RangeError|TypeError/;

/** What went wrong with one run, or undefined. */
async function attempt(words: Word[], cwd: string): Promise<string | undefined> {
  const { args, wrap } = viaShell(["-v", ...words]);
  await using proc = launch(args, { wrap, cwd });
  let serving = false;
  try {
    await waitFor("an end or a listening line", () => {
      serving = /inet: listening on port|unix: bound to/.test(proc.stderr());
      return serving || proc.proc.exitCode !== null;
    }, 8000, 10);
  } catch {
    return `neither ended nor served within 8 s; stderr: ${proc.stderr().slice(0, 300)}`;
  }
  if (serving) proc.proc.kill("SIGTERM");
  const status = await Promise.race([proc.exited(), Bun.sleep(8000).then(() => -1)]);
  const stderr = proc.stderr();
  if (status === -1) return `did not end within 8 s${serving ? " of TERM" : ""}; stderr: ${stderr.slice(0, 300)}`;
  if (BROKEN.test(stderr)) return `a crash or a stack trace (status ${status}): ${stderr.slice(0, 600)}`;
  const stray = stderr.split("\n").find((line) => !OWN_LINE.test(line));
  if (stray !== undefined) return `a line that is not socket's (status ${status}): ${JSON.stringify(stray.slice(0, 200))}`;
  // A pool's master says how its workers ended after the signal's line.
  if (serving) return status === 241 && stderr.includes("\nTermination signal occured, exiting\n") ? undefined : `TERM ended it with ${status}`;
  // A refusal: one reason (and getopt's usage line), a status socket(1) defines: never 0, 70 (a bug) or a signal's.
  const reasons = stderr.split("\n").filter((l) => l.startsWith("socket: "));
  if (status === 0 || status === 70 || status >= 128) return `status ${status}: ${stderr.slice(0, 300)}`;
  if (reasons.length > 1) return `${reasons.length} lines of reasons: ${stderr.slice(0, 300)}`;
  if (!/^(socket: |Usage: socket |It does not make sense )/m.test(stderr)) return `status ${status} without a reason`;
  return undefined;
}

describe("command line fuzzing", () => {
  test("every generated command line ends, with its reason in socket's own words, or serves and ends on TERM", async () => {
    const RUNS = 300;
    const LANES = 4;
    const next = random(Number(process.env.FUZZ_SEED ?? 0x50c6e7)); // another seed explores further
    const lines = Array.from({ length: RUNS }, () => commandLine(next));
    const failures: string[] = [];
    await Promise.all(
      Array.from({ length: LANES }, async (_, lane) => {
        using dir = tempDir();
        for (let i = lane; i < RUNS; i += LANES) {
          const why = await attempt(lines[i], dir.path);
          if (why) failures.push(`socket -v ${show(lines[i])}\n  ${why}`);
        }
      }),
    );
    expect(failures).toEqual([]);
  }, 60_000);
});
