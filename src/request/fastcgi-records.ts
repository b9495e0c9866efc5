// FastCGI's wire format (the FastCGI 1.0 specification): records of an
// 8-byte header, content and padding; name-value pairs with 1- or 4-byte
// lengths. No state of a connection here: fastcgi-responder.ts holds that.
import { lastValueEach, LIMITS, valueOf, variable, type Variable } from "./cgi.ts";

export const VERSION = 1;
export const TYPE = {
  BEGIN_REQUEST: 1,
  ABORT_REQUEST: 2,
  END_REQUEST: 3,
  PARAMS: 4,
  STDIN: 5,
  STDOUT: 6,
  STDERR: 7,
  DATA: 8,
  GET_VALUES: 9,
  GET_VALUES_RESULT: 10,
  UNKNOWN_TYPE: 11,
} as const;
export const ROLE_RESPONDER = 1;
export const KEEP_CONN = 1;
export const STATUS = { REQUEST_COMPLETE: 0, CANT_MPX_CONN: 1, OVERLOADED: 2, UNKNOWN_ROLE: 3 } as const;
const HEADER_SIZE = 8;
/** The largest content one record carries. */
export const MAX_CONTENT = 0xffff;

export interface FcgiRecord {
  type: number;
  requestId: number;
  content: Uint8Array;
}

/** One record (content up to MAX_CONTENT bytes, no padding: padding is optional). */
export function encodeRecord(type: number, requestId: number, content?: Uint8Array): Uint8Array {
  const length = content === undefined ? 0 : content.length;
  const out = new Uint8Array(HEADER_SIZE + length);
  header(out, 0, type, requestId, length);
  if (content !== undefined && length > 0) out.set(content, HEADER_SIZE);
  return out;
}

/** A record's header written at `at` (byte by byte: a DataView would be one more object a record). */
function header(out: Uint8Array, at: number, type: number, requestId: number, length: number): void {
  out[at] = VERSION;
  out[at + 1] = type;
  out[at + 2] = requestId >> 8;
  out[at + 3] = requestId & 0xff;
  out[at + 4] = length >> 8;
  out[at + 5] = length & 0xff;
}

/** A record's whole size on the wire (header, content, padding), from its header at `at`. */
function recordSize(bytes: Uint8Array, at: number): number {
  return HEADER_SIZE + ((bytes[at + 4] << 8) | bytes[at + 5]) + bytes[at + 6];
}

function decodeRecord(bytes: Uint8Array, at: number): FcgiRecord {
  const length = (bytes[at + 4] << 8) | bytes[at + 5];
  return { type: bytes[at + 1], requestId: (bytes[at + 2] << 8) | bytes[at + 3], content: bytes.slice(at + HEADER_SIZE, at + HEADER_SIZE + length) };
}

/**
 * Splits a stream of bytes into records. What it holds between calls is
 * one record begun (at most 8 + 65535 + 255 bytes), in a buffer of that
 * record's size filled in place: a record that comes a byte per chunk
 * costs its size once, not once per chunk.
 */
export class RecordReader {
  private readonly head = new Uint8Array(HEADER_SIZE);
  /** The record begun, once its header is complete. */
  private body: Uint8Array | undefined;
  private have = 0;

  /** The complete records so far, or the reason the stream is malformed. */
  push(chunk: Uint8Array): FcgiRecord[] | { error: string } {
    const records: FcgiRecord[] = [];
    let at = 0;
    if (this.have > 0) {
      const used = this.fill(chunk);
      if (typeof used !== "number") return used;
      if (this.body === undefined || this.have < this.body.length) return records;
      records.push(decodeRecord(this.body, 0));
      this.body = undefined;
      this.have = 0;
      at = used;
    }
    while (chunk.length - at >= HEADER_SIZE) {
      if (chunk[at] !== VERSION) return { error: `record of version ${chunk[at]}, not 1` };
      const end = at + recordSize(chunk, at);
      if (chunk.length < end) break;
      records.push(decodeRecord(chunk, at));
      at = end;
    }
    if (at < chunk.length) {
      const kept = this.fill(chunk.subarray(at));
      if (typeof kept !== "number") return kept;
    }
    return records;
  }

  /** Copies what `bytes` has of the record begun; returns how many bytes it took. */
  private fill(bytes: Uint8Array): number | { error: string } {
    let used = 0;
    if (this.have < HEADER_SIZE) {
      used = Math.min(HEADER_SIZE - this.have, bytes.length);
      this.head.set(bytes.subarray(0, used), this.have);
      this.have += used;
      if (this.have < HEADER_SIZE) return used;
      if (this.head[0] !== VERSION) return { error: `record of version ${this.head[0]}, not 1` };
      this.body = new Uint8Array(recordSize(this.head, 0));
      this.body.set(this.head);
    }
    const body = this.body!;
    const n = Math.min(body.length - this.have, bytes.length - used);
    body.set(bytes.subarray(used, used + n), this.have);
    this.have += n;
    return used + n;
  }

  /** Bytes of a record begun but not complete. */
  get partial(): number {
    return this.have;
  }
}

/** A pair's length at `at`: 1 byte, or 4 with the top bit set (31 bits); -1 when the record ends first. */
function pairLength(bytes: Uint8Array, at: number): number {
  if (at >= bytes.length) return -1;
  const first = bytes[at];
  if (first < 0x80) return first;
  if (at + 4 > bytes.length) return -1;
  return (first & 0x7f) * 0x1000000 + ((bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]);
}

const decoder = new TextDecoder();
/** One byte a character (WHATWG's latin1 is windows-1252, a single-byte encoding): byte offsets are text offsets. */
const oneByte = new TextDecoder("latin1");

/** Whether bytes[from, to) are all ASCII: then their text is the one-byte-a-character slice of the record's. */
function ascii(bytes: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (bytes[i] > 0x7f) return false;
  return true;
}

/**
 * Name-value pairs (lengths of 1 byte, or 4 with the top bit set), at most
 * LIMITS.variables. A web server's pairs are ASCII but for the odd value:
 * the record is decoded once, one byte a character, and each ASCII pair is
 * two slices of that text; only a pair with other bytes is decoded as
 * UTF-8 on its own (variable: its bytes kept when they are not UTF-8).
 */
export function decodePairs(bytes: Uint8Array): Variable[] | { error: string } {
  const pairs: Variable[] = [];
  const text = oneByte.decode(bytes);
  const sliced = text.length === bytes.length;
  let at = 0;
  while (at < bytes.length) {
    const nameLength = pairLength(bytes, at);
    // How wide a length is comes from its first byte (a 4-byte one may hold a small number).
    const valueAt = at + (bytes[at] < 0x80 ? 1 : 4);
    const valueLength = nameLength < 0 ? -1 : pairLength(bytes, valueAt);
    if (valueLength < 0) return { error: "truncated name-value pair length" };
    const start = valueAt + (bytes[valueAt] < 0x80 ? 1 : 4);
    const split = start + nameLength;
    const end = split + valueLength;
    if (end > bytes.length) return { error: "name-value pair runs past its record" };
    if (pairs.length >= LIMITS.variables) return { error: `more than ${LIMITS.variables} variables` };
    if (sliced && ascii(bytes, start, end)) pairs.push([text.slice(start, split), text.slice(split, end)]);
    else pairs.push(variable(decoder.decode(bytes.subarray(start, split)), bytes.subarray(split, end)));
    at = end;
  }
  return pairs;
}

function encodeLength(n: number): Uint8Array {
  if (n < 0x80) return new Uint8Array([n]);
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, (n | 0x80000000) >>> 0);
  return out;
}

export function encodePairs(pairs: Variable[]): Uint8Array {
  const encoder = new TextEncoder();
  const parts: Uint8Array[] = [];
  for (const [name, value] of pairs) {
    const n = encoder.encode(name);
    const v = encoder.encode(value);
    parts.push(encodeLength(n.length), encodeLength(v.length), n, v);
  }
  return Buffer.concat(parts);
}

export function endRequest(requestId: number, appStatus: number, protocolStatus: number): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + 8);
  endRequestAt(out, 0, requestId, appStatus, protocolStatus);
  return out;
}

/** A request's last records in one array: the empty STDOUT (the end of its output), then END_REQUEST. */
export function endOfRequest(requestId: number, appStatus: number, protocolStatus: number): Uint8Array {
  const out = new Uint8Array(2 * HEADER_SIZE + 8);
  header(out, 0, TYPE.STDOUT, requestId, 0);
  endRequestAt(out, HEADER_SIZE, requestId, appStatus, protocolStatus);
  return out;
}

function endRequestAt(out: Uint8Array, at: number, requestId: number, appStatus: number, protocolStatus: number): void {
  header(out, at, TYPE.END_REQUEST, requestId, 8);
  const status = appStatus >>> 0;
  out[at + 8] = status >>> 24;
  out[at + 9] = (status >>> 16) & 0xff;
  out[at + 10] = (status >>> 8) & 0xff;
  out[at + 11] = status & 0xff;
  out[at + 12] = protocolStatus;
}

/** The answer to a record of a type this responder does not know. */
export const unknownType = (type: number) => encodeRecord(TYPE.UNKNOWN_TYPE, 0, new Uint8Array([type, 0, 0, 0, 0, 0, 0, 0]));

/** GET_VALUES_RESULT for a GET_VALUES record: what it asks of FCGI_MAX_CONNS, FCGI_MAX_REQS (both `maxConns`), FCGI_MPXS_CONNS (0). */
/** A management record's (request id 0) answer, or why the connection is dropped. */
export function managementAnswer(type: number, content: Uint8Array, maxConns: number): Uint8Array | { error: string } {
  if (type === TYPE.GET_VALUES) return getValuesResult(content, maxConns);
  if (type >= TYPE.BEGIN_REQUEST && type <= TYPE.DATA) return { error: `record type ${type} with request id 0` };
  return unknownType(type);
}

export function getValuesResult(content: Uint8Array, maxConns: number): Uint8Array | { error: string } {
  const asked = decodePairs(content);
  if ("error" in asked) return asked;
  const max = String(maxConns);
  const known: Record<string, string> = { FCGI_MAX_CONNS: max, FCGI_MAX_REQS: max, FCGI_MPXS_CONNS: "0" };
  const answer: Variable[] = asked.filter(([name]) => name in known).map(([name]) => [name, known[name]]);
  return encodeRecord(TYPE.GET_VALUES_RESULT, 0, encodePairs(answer));
}

/**
 * A request's PARAMS as they come, to the empty record that ends them: their
 * contents joined in one buffer as they come (grown by doubling, at most
 * LIMITS.headerBytes), `paramsSize` bytes of it used. Kept as the records
 * themselves, 64 KiB of one-byte records was 64 Ki arrays, some 6 MB held a
 * connection for the header's 30 s.
 */
export interface HeldParams {
  params: Uint8Array;
  paramsSize: number;
}

const NO_BYTES = new Uint8Array(0);

/** No PARAMS yet. */
export function heldParams(): HeldParams {
  return { params: NO_BYTES, paramsSize: 0 };
}

/** The PARAMS so far are dropped (the request is over): a kept connection holds no buffer between requests. */
export function dropParams(held: HeldParams): void {
  held.params = NO_BYTES;
  held.paramsSize = 0;
}

/**
 * One PARAMS record: undefined while more are to come; at the empty one the
 * variables, one value per name (the last sent), with `streams` false when there is no CONTENT_LENGTH to stream
 * the body by (it is then read to its end first: RFC 3875 4.2, the CGI gets
 * CONTENT_LENGTH bytes); or why the connection is dropped.
 */
export function gatherParams(held: HeldParams, content: Uint8Array): { variables: Variable[]; streams: boolean } | string | undefined {
  if (content.length > 0) {
    const size = held.paramsSize + content.length;
    if (size > LIMITS.headerBytes) return `PARAMS over the ${LIMITS.headerBytes}-byte limit`;
    if (size > held.params.length) {
      const grown = new Uint8Array(Math.min(LIMITS.headerBytes, Math.max(size, 2 * held.params.length, 1024)));
      grown.set(held.params.subarray(0, held.paramsSize));
      held.params = grown;
    }
    held.params.set(content, held.paramsSize);
    held.paramsSize = size;
    return undefined;
  }
  const pairs = decodePairs(held.params.subarray(0, held.paramsSize));
  dropParams(held);
  if ("error" in pairs) return pairs.error;
  // Here, before anything reads them: the program chosen and its environment see the same one value per name.
  const variables = lastValueEach(pairs);
  return { variables, streams: /^\d+$/.test(valueOf(variables, "CONTENT_LENGTH") ?? "") };
}
