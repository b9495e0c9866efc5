// --allow and --deny: who may connect to a TCP server, as CIDR rules read
// in order (the first that matches decides; with any --allow, an address no
// rule matches is denied, as tcpserver's rules end in a deny). The subnet
// arithmetic is node:net's BlockList (built in: IPv4 and IPv6 prefixes), not
// code of our own; each rule is one BlockList so that the order is kept.
import { BlockList, isIP } from "node:net";

/** One rule as the command line gave it. */
export interface AccessRule {
  allow: boolean;
  cidr: string;
}

interface Subnet {
  allow: boolean;
  family: "ipv4" | "ipv6";
  list: BlockList;
}

/** `ADDRESS/PREFIX` or a bare address (a /32 or /128); an error message for anything else. */
function parseSubnet(rule: AccessRule): Subnet | string {
  const [ip, prefixText, extra] = rule.cidr.split("/");
  const version = isIP(ip ?? "");
  const name = rule.allow ? "--allow" : "--deny";
  const bad = `${name} wants an IPv4 or IPv6 address with an optional /PREFIX (such as 10.0.0.0/8 or ::1/128), not '${rule.cidr}'`;
  if (version === 0 || extra !== undefined) return bad;
  const max = version === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= max)) return bad;
  const family = version === 4 ? "ipv4" : "ipv6";
  const list = new BlockList();
  try {
    list.addSubnet(ip, prefix, family);
  } catch {
    return bad;
  }
  return { allow: rule.allow, family, list };
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
    this.subnets = rules.map((r) => parseSubnet(r) as Subnet);
    this.anyAllow = rules.some((r) => r.allow);
  }

  /** Whether a peer at `ip` may connect. An IPv4-mapped IPv6 peer (::ffff:a.b.c.d) is its IPv4 address. */
  permits(ip: string): boolean {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
    const address = mapped ? mapped[1] : ip;
    const family = isIP(address) === 4 ? "ipv4" : "ipv6";
    for (const s of this.subnets) {
      if (s.family === family && s.list.check(address, family)) return s.allow;
    }
    return !this.anyAllow;
  }
}

/** The -v line for a connection the rules refused. */
export function refusedLine(ip: string): string {
  return `inet: connection from ${ip} refused (--allow/--deny): closed`;
}
