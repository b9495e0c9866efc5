// A CGI's stderr as log lines (request/stderr-lines.ts), on generated
// input: however the bytes are chunked the lines are the same; every line
// is whole, names the program, fits in one atomic write (PIPE_BUF); a long
// line is cut at a character's start; a request adds at most its budget,
// and the one closing line counts exactly what was not logged. Seeded, so
// a failure names the seed that reproduces it.
import { describe, expect, test } from "bun:test";
import { random } from "./harness.ts";
import { CUT_MARK, LINE_BYTES, REQUEST_BUDGET, StderrBudget, StderrLines, stderrPrefix } from "../src/request/stderr-lines.ts";


const enc = new TextEncoder();
const strict = new TextDecoder("utf-8", { fatal: true });
const WORDS = ["warning", "é", "日本", "🙂", "x", " ", "PHP Notice:", "\t"];

/** Lines of random length (some far over LINE_BYTES), of ASCII and multi-byte characters; the last may have no newline. */
function generate(next: () => number, lines: number, lastNewline = false): Uint8Array {
  let text = "";
  for (let i = 0; i < lines; i++) {
    const long = next() < 0.15;
    const target = long ? LINE_BYTES + Math.floor(next() * 3 * LINE_BYTES) : Math.floor(next() * 200);
    let line = "";
    while (line.length < target) line += WORDS[Math.floor(next() * WORDS.length)];
    text += line + (i < lines - 1 || lastNewline || next() < 0.5 ? "\n" : "");
  }
  return enc.encode(text);
}

/** All the lines `bytes` make, fed in random chunks (`next`), or whole. */
function run(bytes: Uint8Array, next?: () => number, budget?: number): string[] {
  const lines = new StderrLines(4242, "/srv/app.cgi", budget);
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; ) {
    const size = next === undefined ? bytes.length : Math.max(1, Math.floor(next() * 9000));
    out.push(...lines.feed(bytes.subarray(at, at + size)));
    at += size;
  }
  out.push(...lines.end());
  return out.map((line) => {
    expect(line.length).toBeLessThanOrEqual(LINE_BYTES);
    return strict.decode(line); // a cut never splits a character
  });
}

const PREFIX = stderrPrefix(4242, "/srv/app.cgi");

describe("a CGI's stderr as lines", () => {
  test("random chunkings give the same lines, each whole, prefixed, within PIPE_BUF", () => {
    for (let seed = 1; seed <= 40; seed++) {
      const next = random(seed);
      const input = generate(next, 1 + Math.floor(next() * 30));
      const whole = run(input, undefined, Infinity);
      for (let round = 0; round < 3; round++) expect(run(input, next, Infinity), `seed ${seed}`).toEqual(whole);
      for (const line of whole) {
        expect(line.startsWith(PREFIX), `seed ${seed}`).toBe(true);
        expect(line.endsWith("\n")).toBe(true);
        expect(line.slice(0, -1).includes("\n")).toBe(false);
      }
    }
  });

  test("short lines come out as they went in, the last one without its newline too", () => {
    const lines = run(enc.encode("one\ntwo\r\n\nthree"), () => 0.0001);
    expect(lines).toEqual([`${PREFIX}one\n`, `${PREFIX}two\n`, `${PREFIX}\n`, `${PREFIX}three\n`]); // a CRLF ends a line as LF does
  });

  test("a line over the bound is cut with the mark, its rest skipped and counted", () => {
    const room = LINE_BYTES - enc.encode(PREFIX).length - CUT_MARK.length - 1;
    const fits = "a".repeat(room);
    expect(run(enc.encode(`${fits}\nnext\n`), () => 0.3)).toEqual([`${PREFIX}${fits}\n`, `${PREFIX}next\n`]);
    const long = "b".repeat(room + 100);
    const lines = run(enc.encode(`${long}\nnext\n`), () => 0.3);
    expect(lines).toEqual([`${PREFIX}${"b".repeat(room)}${CUT_MARK}\n`, `${PREFIX}next\n`, `${PREFIX}... 101 bytes of stderr dropped\n`]);
    expect(enc.encode(lines[0]).length).toBe(LINE_BYTES);
  });

  test("a cut falls at a character's start: the split character goes with the rest", () => {
    const room = LINE_BYTES - enc.encode(PREFIX).length - CUT_MARK.length - 1;
    const line = `${"a".repeat(room - 1)}🙂🙂`; // the first emoji's 4 bytes straddle the bound
    const lines = run(enc.encode(line));
    expect(lines[0]).toBe(`${PREFIX}${"a".repeat(room - 1)}${CUT_MARK}\n`);
    expect(lines[1]).toBe(`${PREFIX}... 8 bytes of stderr dropped\n`);
  });

  test("past the budget nothing more is logged, and the last line counts exactly what was not", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const next = random(seed);
      const input = generate(next, 200, true);
      const lines = run(input, next);
      const dropped = lines.at(-1)!.match(/^cgi 4242 \/srv\/app\.cgi: \.\.\. (\d+) bytes of stderr dropped\n$/);
      expect(dropped, `seed ${seed}`).not.toBeNull();
      const logged = lines.slice(0, -1);
      expect(logged.reduce((sum, line) => sum + enc.encode(line).length, 0)).toBeLessThanOrEqual(REQUEST_BUDGET);
      // Each logged line carries its content and newline; a cut one its content only (its rest was dropped).
      const carried = logged.reduce((sum, line) => {
        const content = line.slice(PREFIX.length, -1);
        return sum + (content.endsWith(CUT_MARK) ? enc.encode(content).length - CUT_MARK.length : enc.encode(content).length + 1);
      }, 0);
      expect(carried + Number(dropped![1]), `seed ${seed}`).toBe(input.length);
    }
  });

  test("a hundred megabytes without a newline cost one cut line and one count", () => {
    const lines = new StderrLines(7, "/x.cgi");
    const chunk = new Uint8Array(64 * 1024).fill(0x41);
    const out: Uint8Array[] = [];
    for (let i = 0; i < 1600; i++) out.push(...lines.feed(chunk));
    out.push(...lines.end());
    expect(out.length).toBe(2);
    expect(new TextDecoder().decode(out[1])).toBe(`cgi 7 /x.cgi: ... ${1600 * chunk.length - (out[0].length - "cgi 7 /x.cgi: ".length - CUT_MARK.length - 1)} bytes of stderr dropped\n`);
  });

  test("a long program name keeps its end and leaves room for the line", () => {
    const name = `/srv/${"deep/".repeat(400)}app.cgi`;
    const prefix = stderrPrefix(1, name);
    expect(prefix.length).toBeLessThan(300);
    expect(prefix.endsWith("deep/app.cgi: ")).toBe(true);
    const out = new StderrLines(1, name).feed(enc.encode("hello\n"));
    expect(new TextDecoder().decode(out[0])).toBe(`${prefix}hello\n`);
  });

  test("a program's name cannot forge a line: its control characters are shown as ?", () => {
    expect(stderrPrefix(9, "/srv/a\ncgi 1 /srv/b.cgi\r\x1b[2K\u009b0m")).toBe("cgi 9 /srv/a?cgi 1 /srv/b.cgi??[2K?0m: ");
  });

  test("a program's bytes cannot hide the prefix nor reach a terminal: control characters (but tab) are shown as ?, one byte for one", () => {
    // What a CGI prints may carry a client's bytes: a CR over the prefix, an escape sequence, NUL, DEL, C1's CSI (U+009B) as UTF-8.
    const hostile = "GET /x\rsocket: forged\x1b[2J\x1b]0;title\x07\0\x7f\u009b31m\tend é\u00a0\r";
    const shown = "GET /x?socket: forged?[2J?]0;title?????31m\tend é\u00a0";
    for (const next of [undefined, () => 0.0001]) {
      expect(run(enc.encode(`${hostile}\n${hostile}`), next)).toEqual([`${PREFIX}${shown}\n`, `${PREFIX}${shown}?\n`]);
    }
    // U+009B's two bytes in two chunks, and a CRLF split between chunks.
    const lines = new StderrLines(4242, "/srv/app.cgi");
    const out = [...lines.feed(new Uint8Array([0x61, 0xc2])), ...lines.feed(new Uint8Array([0x9b, 0x62, 0x0d])), ...lines.feed(new Uint8Array([0x0a])), ...lines.end()];
    expect(out.map((line) => strict.decode(line))).toEqual([`${PREFIX}a??b\n`]);
  });

  test("clean output says nothing at its end", () => {
    const lines = new StderrLines(1, "a");
    expect(lines.feed(enc.encode("x\n")).length).toBe(1);
    expect(lines.end()).toEqual([]);
  });
});

describe("a CGI's stderr to the web server", () => {
  test("random chunkings: the first bytes up to the budget go as they came, the rest is counted once", () => {
    for (let round = 0; round < 50; round++) {
      const next = random(round + 1);
      const total = Math.floor(next() * 3 * REQUEST_BUDGET);
      const bytes = new Uint8Array(total).map((_, i) => i % 251);
      const budget = new StderrBudget();
      const went: number[] = [];
      for (let at = 0; at < total; ) {
        const size = Math.min(total - at, 1 + Math.floor(next() * 70000));
        went.push(...budget.take(bytes.subarray(at, at + size)));
        at += size;
      }
      const kept = Math.min(total, REQUEST_BUDGET);
      expect(went).toEqual([...bytes.subarray(0, kept)]);
      const note = new TextDecoder().decode(budget.end());
      expect(note).toBe(total > kept ? `\n... ${total - kept} byte${total - kept === 1 ? "" : "s"} of stderr dropped\n` : "");
      expect(budget.end().length).toBe(0);
    }
  });
});
