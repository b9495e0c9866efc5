// Socket addresses to and from the bytes the kernel takes (struct
// sockaddr_in, sockaddr_in6, sockaddr_un). IP text goes through the C
// library's inet_pton and inet_ntop: a hand-written IPv6 codec read the
// dotted tail of "::ffff:127.0.0.1" as hex and connected nowhere.
import { dlopen, FFIType } from "bun:ffi";

const { i32, u32, ptr } = FFIType;
function open() {
  return dlopen("libc.so.6", {
  inet_pton: { args: [i32, ptr, ptr], returns: i32 },
  inet_ntop: { args: [i32, ptr, ptr, u32], returns: ptr },
}).symbols;
}
let symbols: ReturnType<typeof open> | undefined;
/** Opened at the first call, as ffi.ts's symbols are. */
const lib = (): ReturnType<typeof open> => (symbols ??= open());

export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
/** sun_path holds 108 bytes, the terminating NUL included. */
const SUN_PATH = 108;

/** One end of a connection, as getsockname/getpeername report it. */
export type Endpoint =
  | { family: "inet"; ip: string; port: number }
  | { family: "unix"; path: string };

/** The IP text of `family` (AF_INET, AF_INET6) as its address bytes; undefined when it is not one. */
export function ipBytes(family: number, ip: string): Uint8Array | undefined {
  const out = new Uint8Array(family === AF_INET ? 4 : 16);
  return lib().inet_pton(family, Buffer.from(`${ip}\0`), out) === 1 ? out : undefined;
}

/**
 * 4 or 6 when `text` is an IPv4 or IPv6 literal, else 0. The C library's
 * answer, not node:net's isIP: loading node:net would lengthen every start
 * (docs/DESIGN.md, "Measurements behind the code").
 */
export function ipFamily(text: string): 0 | 4 | 6 {
  if (ipBytes(AF_INET, text)) return 4;
  return ipBytes(AF_INET6, text) ? 6 : 0;
}

function ipText(family: number, bytes: Uint8Array): string {
  const out = new Uint8Array(46); // INET6_ADDRSTRLEN
  lib().inet_ntop(family, bytes, out, out.length);
  const end = out.indexOf(0);
  return new TextDecoder().decode(out.subarray(0, end < 0 ? out.length : end));
}

/** sockaddr_in or sockaddr_in6 for `ip` (a literal of `family`) and `port`; undefined for a malformed ip. */
export function inetSockaddr(family: number, ip: string, port: number): Uint8Array | undefined {
  const bytes = ipBytes(family, ip);
  if (!bytes) return undefined;
  const sa = new Uint8Array(family === AF_INET ? 16 : 28);
  const view = new DataView(sa.buffer);
  view.setUint16(0, family, true);
  view.setUint16(2, port, false);
  sa.set(bytes, family === AF_INET ? 4 : 8);
  return sa;
}

/**
 * sockaddr_un for a path, or with `abstract` and a leading "@" an abstract
 * name (sd_notify's convention); undefined when too long.
 */
export function unixSockaddr(path: string, abstract = false): Uint8Array | undefined {
  const name = Buffer.from(path);
  if (name.length >= SUN_PATH) return undefined;
  const sa = new Uint8Array(2 + name.length + (abstract ? 0 : 1));
  new DataView(sa.buffer).setUint16(0, AF_UNIX, true);
  sa.set(name, 2);
  if (abstract) sa[2] = 0;
  return sa;
}

/** What getsockname/getpeername wrote (`len` bytes of `sa`). An IPv4-mapped IPv6 peer is shown as IPv4, as tcpserver shows it. */
export function decodeSockaddr(sa: Uint8Array, len: number): Endpoint {
  const view = new DataView(sa.buffer, sa.byteOffset, sa.byteLength);
  const family = view.getUint16(0, true);
  const port = view.getUint16(2, false);
  if (family === AF_INET) return { family: "inet", ip: ipText(AF_INET, sa.subarray(4, 8)), port };
  if (family === AF_INET6) {
    const ip = ipText(AF_INET6, sa.subarray(8, 24));
    return { family: "inet", ip: ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip, port };
  }
  let end = 2;
  while (end < len && sa[end] !== 0) end++;
  return { family: "unix", path: new TextDecoder().decode(sa.subarray(2, end)) };
}
