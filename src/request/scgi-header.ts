// SCGI's request header: a netstring (`LEN:NAME\0VALUE\0...,`) of
// name-value pairs, checked as the SCGI spec says. Pure: both SCGI engines
// (gateway/scgi-blocking.ts, gateway/scgi-evented.ts) parse with it.
import { HEADER_TIMEOUT_MS, LIMITS, printable, variable, type Variable } from "./cgi.ts";

export interface ScgiRequest {
  variables: Variable[];
  contentLength: number;
}

/** The length prefix of a netstring: "LEN:" — digits, then a colon. */
export type Prefix = { length: number; size: number } | { need: true } | { error: string };

/** Longest prefix accepted: the header limit has 5 digits; a sixth allows leading zeros. */
export const MAX_DIGITS = 6;
const COLON = 0x3a;
export const COMMA = 0x2c;

export function parsePrefix(bytes: Uint8Array): Prefix {
  let i = 0;
  while (i < bytes.length && bytes[i] >= 0x30 && bytes[i] <= 0x39) i++;
  if (i > MAX_DIGITS) return { error: "netstring length has too many digits" };
  if (i === bytes.length) return { need: true };
  if (bytes[i] !== COLON || i === 0) return { error: "not a netstring (no LEN: prefix)" };
  const length = Number(new TextDecoder().decode(bytes.subarray(0, i)));
  if (length > LIMITS.headerBytes) return { error: `header of ${length} bytes is over the ${LIMITS.headerBytes}-byte limit` };
  return { length, size: i + 1 };
}

const decoder = new TextDecoder();

/**
 * The header's pairs (`header` is the netstring's content, without the
 * prefix and comma), checked as the SCGI spec says: CONTENT_LENGTH first
 * and a decimal number, SCGI=1 present, names unique, at most
 * LIMITS.variables pairs.
 */
export function parseScgiHeader(header: Uint8Array): ScgiRequest | { error: string } {
  const variables: Variable[] = [];
  const seen = new Set<string>();
  let at = 0;
  while (at < header.length) {
    const nameEnd = header.indexOf(0, at);
    const valueEnd = nameEnd < 0 ? -1 : header.indexOf(0, nameEnd + 1);
    if (valueEnd < 0) return { error: "header does not end with a complete NAME\\0VALUE\\0 pair" };
    const name = decoder.decode(header.subarray(at, nameEnd));
    if (name === "") return { error: "empty variable name" };
    if (seen.has(name)) return { error: `variable ${printable(name)} sent twice` };
    if (variables.length >= LIMITS.variables) return { error: `more than ${LIMITS.variables} variables` };
    seen.add(name);
    variables.push(variable(name, header.subarray(nameEnd + 1, valueEnd)));
    at = valueEnd + 1;
  }
  if (variables[0]?.[0] !== "CONTENT_LENGTH") return { error: "CONTENT_LENGTH is not the first variable" };
  const length = variables[0][1];
  if (!/^\d{1,15}$/.test(length)) return { error: `CONTENT_LENGTH ${printable(length.slice(0, 20))} is not a number` };
  if (!variables.some(([n, v]) => n === "SCGI" && v === "1")) return { error: "no SCGI=1 variable" };
  return { variables, contentLength: Number(length) };
}

/**
 * A whole netstring at the start of `bytes`: the request and where the
 * body starts, or that more bytes are needed, or why it is malformed.
 */
export function parseNetstring(bytes: Uint8Array): (ScgiRequest & { bodyStart: number }) | { need: true } | { error: string } {
  const prefix = parsePrefix(bytes.subarray(0, MAX_DIGITS + 1));
  if (!("length" in prefix)) return prefix;
  const end = prefix.size + prefix.length;
  if (bytes.length <= end) return { need: true };
  if (bytes[end] !== COMMA) return { error: "netstring does not end with ','" };
  const request = parseScgiHeader(bytes.subarray(prefix.size, end));
  return "error" in request ? request : { ...request, bodyStart: end + 1 };
}

/**
 * How long a connection has for its header, counted from accept (and for
 * the rest of a body nobody reads, from the program's end): 30 s, or
 * --timeout when smaller.
 */
export function limitMs(options: { timeoutMs?: number }): number {
  return Math.min(HEADER_TIMEOUT_MS, options.timeoutMs ?? HEADER_TIMEOUT_MS);
}

