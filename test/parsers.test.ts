// The wire parsers on generated input: FastCGI's record reader and
// name-value pairs, SCGI's netstring. Whatever the bytes, a parser returns
// its records or its typed error, never throws, and holds at most one
// record begun. Seeded, so a failure names the seed that reproduces it.
import { describe, expect, test } from "bun:test";
import { random } from "./harness.ts";
import { decodePairs, encodePairs, encodeRecord, MAX_CONTENT, RecordReader, TYPE, type FcgiRecord } from "../src/request/fastcgi-records.ts";
import { parseNetstring, parsePrefix } from "../src/request/scgi-header.ts";
import { LIMITS, variable, type Variable } from "../src/request/cgi.ts";


const int = (r: () => number, n: number) => Math.floor(r() * n);
const bytes = (r: () => number, n: number) => Uint8Array.from({ length: n }, () => int(r, 256));
const SEEDS = Array.from({ length: 200 }, (_, i) => i + 1);
/** The most a reader may hold between calls: one record begun (header, content, padding). */
const MOST_HELD = 8 + MAX_CONTENT + 255;

/** A valid stream of records of random types, ids and sizes. */
function records(r: () => number): FcgiRecord[] {
  return Array.from({ length: 1 + int(r, 6) }, () => {
    const size = r() < 0.1 ? int(r, MAX_CONTENT + 1) : int(r, 300);
    return { type: 1 + int(r, 11), requestId: int(r, 3), content: bytes(r, size) };
  });
}

/** Cuts a stream at random places (single bytes among them). */
function chunks(r: () => number, stream: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < stream.length; ) {
    const n = r() < 0.3 ? 1 : 1 + int(r, 2000);
    out.push(stream.subarray(at, at + n));
    at += n;
  }
  return out;
}

/** Feeds chunks to a new reader: the records, or the first error; throws only on a broken invariant. */
function readAll(parts: Uint8Array[]): FcgiRecord[] | { error: string } {
  const reader = new RecordReader();
  const all: FcgiRecord[] = [];
  for (const part of parts) {
    const got = reader.push(part);
    if ("error" in got) return got;
    all.push(...got);
    if (reader.partial > MOST_HELD) throw new Error(`reader holds ${reader.partial} bytes`);
  }
  return all;
}

describe("FastCGI records", () => {
  test("a valid stream cut anywhere reads as the same records", () => {
    for (const seed of SEEDS) {
      const r = random(seed);
      const sent = records(r);
      const stream = Buffer.concat(sent.map((x) => encodeRecord(x.type, x.requestId, x.content)));
      const got = readAll(chunks(r, stream));
      expect({ seed, got }).toEqual({ seed, got: sent });
    }
  });

  test("random and mutated bytes give records or the typed error, never a throw", () => {
    for (const seed of SEEDS) {
      const r = random(seed);
      const sent = records(r);
      const stream = Uint8Array.from(Buffer.concat(sent.map((x) => encodeRecord(x.type, x.requestId, x.content))));
      for (let i = 0; i < 1 + int(r, 8); i++) stream[int(r, stream.length)] = int(r, 256);
      for (const input of [stream, bytes(r, int(r, 5000))]) {
        const got = readAll(chunks(r, input));
        if ("error" in got) expect(got.error).toMatch(/^record of version \d+, not 1$/);
        else for (const record of got) expect(record.content.length).toBeLessThanOrEqual(MAX_CONTENT);
      }
    }
  });

  test("name-value pairs round-trip, and any bytes decode to pairs or the typed error", () => {
    for (const seed of SEEDS) {
      const r = random(seed);
      const pairs: Variable[] = Array.from({ length: int(r, 20) }, (_, i) => [`N${i}_${int(r, 1000)}`, "v".repeat(r() < 0.2 ? 200 + int(r, 300) : int(r, 10))]);
      expect(decodePairs(encodePairs(pairs))).toEqual(pairs);
      const mutated = Uint8Array.from(encodePairs(pairs));
      for (let i = 0; i < 1 + int(r, 4) && mutated.length > 0; i++) mutated[int(r, mutated.length)] = int(r, 256);
      for (const input of [mutated, bytes(r, int(r, 600))]) {
        const got = decodePairs(input);
        if ("error" in got) expect(got.error).toMatch(/name-value pair|variables/);
        else expect(got.length).toBeLessThanOrEqual(LIMITS.variables);
      }
    }
  });

  test("any bytes decode as one pair at a time would: ASCII, UTF-8, other bytes kept raw, 4-byte lengths of small numbers", () => {
    const pieces = ["A", "é", "\u{1f600}", "\0", "=", "x".repeat(130)];
    const text = (r: () => number) => Array.from({ length: int(r, 6) }, () => pieces[int(r, pieces.length)]).join("");
    for (const seed of SEEDS) {
      const r = random(seed);
      const parts: Uint8Array[] = [];
      for (let i = int(r, 12); i > 0; i--) {
        const name = Buffer.from(text(r));
        const value = r() < 0.3 ? bytes(r, int(r, 40)) : Buffer.from(text(r));
        // A length may be sent in 4 bytes whatever its size.
        const length = (n: number) => (n < 0x80 && r() < 0.7 ? [n] : [0x80 | (n >>> 24), (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
        parts.push(Uint8Array.from([...length(name.length), ...length(value.length)]), name, value);
      }
      const stream = Buffer.concat(parts);
      expect({ seed, got: decodePairs(stream) }).toEqual({ seed, got: pairAtATime(stream) });
    }
  });

  test("more pairs than the limit is the typed error", () => {
    const many: Variable[] = Array.from({ length: LIMITS.variables + 1 }, (_, i) => [`V${i}`, ""]);
    expect(decodePairs(encodePairs(many))).toEqual({ error: `more than ${LIMITS.variables} variables` });
  });

  test("a record header alone is held, not answered", () => {
    const reader = new RecordReader();
    expect(reader.push(encodeRecord(TYPE.PARAMS, 1, new Uint8Array(10)).subarray(0, 8))).toEqual([]);
    expect(reader.partial).toBe(8);
  });
});

/** The plain decoder: each name and value on its own, the value through cgi.ts's variable. */
function pairAtATime(bytes: Uint8Array): Variable[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const length = (at: number): [number, number] => (bytes[at] < 0x80 ? [bytes[at], at + 1] : [view.getUint32(at) & 0x7fffffff, at + 4]);
  const pairs: Variable[] = [];
  for (let at = 0; at < bytes.length; ) {
    const [n, valueAt] = length(at);
    const [v, start] = length(valueAt);
    pairs.push(variable(new TextDecoder().decode(bytes.subarray(start, start + n)), bytes.subarray(start + n, start + n + v)));
    at = start + n + v;
  }
  return pairs;
}

/** A netstring of an SCGI header: pairs NAME\0VALUE\0. */
function netstring(pairs: [string, string][], body = ""): Uint8Array {
  const header = pairs.map(([n, v]) => `${n}\0${v}\0`).join("");
  return new TextEncoder().encode(`${Buffer.byteLength(header)}:${header},${body}`);
}

describe("SCGI netstring", () => {
  test("a valid header parses, its body starting after the comma", () => {
    const input = netstring([["CONTENT_LENGTH", "5"], ["SCGI", "1"], ["REQUEST_METHOD", "POST"]], "hello");
    const got = parseNetstring(input);
    expect(got).toMatchObject({ contentLength: 5, variables: [["CONTENT_LENGTH", "5"], ["SCGI", "1"], ["REQUEST_METHOD", "POST"]] });
    if ("bodyStart" in got) expect(new TextDecoder().decode(input.subarray(got.bodyStart))).toBe("hello");
  });

  test("the spec's rules are typed errors", () => {
    const cases: [[string, string][], RegExp][] = [
      [[["SCGI", "1"], ["CONTENT_LENGTH", "0"]], /CONTENT_LENGTH is not the first/],
      [[["CONTENT_LENGTH", "x"], ["SCGI", "1"]], /is not a number/],
      [[["CONTENT_LENGTH", "0"]], /no SCGI=1/],
      [[["CONTENT_LENGTH", "0"], ["SCGI", "1"], ["A", "1"], ["A", "2"]], /sent twice/],
    ];
    for (const [pairs, error] of cases) expect(parseNetstring(netstring(pairs))).toMatchObject({ error: expect.stringMatching(error) });
    // A client's bytes in the error are quoted: a newline in them makes no -v line of its own.
    expect(parseNetstring(netstring([["CONTENT_LENGTH", "1\nforged"], ["SCGI", "1"]]))).toEqual({ error: 'CONTENT_LENGTH "1\\nforged" is not a number' });
    expect(parseNetstring(netstring([["CONTENT_LENGTH", "0"], ["SCGI", "1"], ["A\nB", "1"], ["A\nB", "2"]]))).toEqual({ error: 'variable "A\\nB" sent twice' });
    expect(parsePrefix(new TextEncoder().encode(`${LIMITS.headerBytes + 1}:`))).toMatchObject({ error: expect.stringMatching(/over the/) });
  });

  test("every prefix of a valid request needs more; random and mutated bytes give the typed error, never a throw", () => {
    for (const seed of SEEDS) {
      const r = random(seed);
      const pairs: [string, string][] = [["CONTENT_LENGTH", String(int(r, 100))], ["SCGI", "1"]];
      for (let i = 0; i < int(r, 10); i++) pairs.push([`H${i}`, "x".repeat(int(r, 50))]);
      const valid = netstring(pairs, "b");
      const cut = int(r, valid.length - 1);
      expect(parseNetstring(valid.subarray(0, cut))).toEqual({ need: true });
      const mutated = Uint8Array.from(valid);
      for (let i = 0; i < 1 + int(r, 4); i++) mutated[int(r, mutated.length)] = int(r, 256);
      for (const input of [mutated, bytes(r, int(r, 300))]) {
        const got = parseNetstring(input);
        expect("need" in got || "error" in got || "bodyStart" in got).toBe(true);
        if ("error" in got) expect(typeof got.error).toBe("string");
      }
    }
  });
});
