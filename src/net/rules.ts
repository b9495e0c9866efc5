// --allow and --deny: who may connect to a TCP server, as CIDR rules read
// in order (the first that matches decides; with any --allow, an address no
// rule matches is denied, as tcpserver's rules end in a deny). Addresses
// are read by the C library's inet_pton (system/sockaddr.ts) and a prefix is
// compared bit by bit. Not node:net's BlockList: loading node:net makes every
// worker's own heap larger, whether or not rules were given (docs/DESIGN.md,
// "Measurements behind the code").
import { AF_INET, AF_INET6, ipBytes } from "../system/sockaddr.ts";

/** One rule as the command line gave it. */
export interface AccessRule {
  allow: boolean;
  cidr: string;
}

interface Subnet {
  allow: boolean;
  /** The network's address bytes (4 or 16) and how many leading bits must match. */
  bytes: Uint8Array;
  prefix: number;
}

/** Whether 16 address bytes are an IPv4-mapped IPv6 address (::ffff:a.b.c.d). */
const isMapped = (bytes: Uint8Array): boolean =>
  bytes.length === 16 && bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;

/** An IPv4 or IPv6 literal as its bytes; an IPv4-mapped IPv6 one (::ffff:a.b.c.d) as its IPv4 bytes. */
function addressBytes(ip: string): Uint8Array | undefined {
  const bytes = ipBytes(AF_INET, ip) ?? ipBytes(AF_INET6, ip);
  return bytes && isMapped(bytes) ? bytes.slice(12) : bytes;
}

/** `ADDRESS/PREFIX` or a bare address (a /32 or /128); an error message for anything else. */
function parseSubnet(rule: AccessRule): Subnet | string {
  const [ip, prefixText, extra] = rule.cidr.split("/");
  const name = rule.allow ? "--allow" : "--deny";
  const bad = `${name} wants an IPv4 or IPv6 address with an optional /PREFIX (such as 10.0.0.0/8 or ::1/128), not '${rule.cidr}'`;
  const bytes = ipBytes(AF_INET, ip ?? "") ?? ipBytes(AF_INET6, ip ?? "");
  if (!bytes || extra !== undefined) return bad;
  const max = bytes.length * 8;
  const prefix = prefixText === undefined ? max : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= max)) return bad;
  // A mapped peer is matched as IPv4 (addressBytes), so a mapped network
  // (::ffff:10.0.0.0/104) is its IPv4 one: kept as IPv6 it could match no peer at all.
  if (isMapped(bytes) && prefix >= 96) return { allow: rule.allow, bytes: bytes.slice(12), prefix: prefix - 96 };
  return { allow: rule.allow, bytes, prefix };
}

/** Whether the first `prefix` bits of `address` are the network's. */
function within(address: Uint8Array, subnet: Subnet): boolean {
  if (address.length !== subnet.bytes.length) return false;
  const whole = subnet.prefix >> 3;
  for (let i = 0; i < whole; i++) if (address[i] !== subnet.bytes[i]) return false;
  const rest = subnet.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((address[whole]! ^ subnet.bytes[whole]!) & mask) === 0;
}

/** The first bad rule's message, or undefined when every rule is well formed (cli/parse.ts). */
export function checkRules(rules: AccessRule[]): string | undefined {
  for (const rule of rules) {
    const subnet = parseSubnet(rule);
    if (typeof subnet === "string") return subnet;
  }
  return undefined;
}

export class AccessRules {
  private readonly subnets: Subnet[];
  private readonly anyAllow: boolean;

  /** The rules must have passed checkRules. */
  constructor(rules: AccessRule[]) {
    this.subnets = rules.map((r) => {
      const subnet = parseSubnet(r);
      if (typeof subnet === "string") throw new Error(`unchecked rule: ${subnet}`);
      return subnet;
    });
    this.anyAllow = rules.some((r) => r.allow);
  }

  /** Whether a peer at `ip` may connect. An IPv4-mapped IPv6 peer (::ffff:a.b.c.d) is its IPv4 address. */
  permits(ip: string): boolean {
    const address = addressBytes(ip);
    if (!address) return !this.anyAllow;
    for (const s of this.subnets) {
      if (within(address, s)) return s.allow;
    }
    return !this.anyAllow;
  }
}

/** The -v line for a connection the rules refused. */
export function refusedLine(ip: string): string {
  return `inet: connection from ${ip} refused (--allow/--deny): closed`;
}
