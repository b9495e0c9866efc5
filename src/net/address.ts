// Destinations to socket addresses: host names, IPv4 and IPv6 literals,
// port numbers and /etc/services names, UNIX paths.
import type { Destination } from "../options.ts";
import { Fatal } from "../fatal.ts";
import { ipFamily } from "../system/sockaddr.ts";
import { passedSocket } from "./activation.ts";
import { fs, nodePath } from "../system/builtins.ts";

const EXIT_UNKNOWN_SERVICE = 5;
const EXIT_UNKNOWN_HOST = 13;
/** sun_path holds 108 bytes with the terminating NUL. */
const UNIX_PATH_MAX = 107;

/** One address of a host. */
export type HostAddress = { ip: string; family: 4 | 6 };
export type InetAddress = {
  kind: "inet";
  ip: string;
  family: 4 | 6;
  port: number;
  service: string | undefined;
  /** A name's other addresses, in order after `ip`: a client tries each in turn. */
  alternatives?: HostAddress[];
};
export type UnixAddress = { kind: "unix"; path: string };
export type Address = InetAddress | UnixAddress;

type Service = { name: string; port: number };
let services: Service[] | undefined;

function serviceTable(): Service[] {
  if (services) return services;
  let text = "";
  try {
    text = fs().readFileSync("/etc/services", "utf8");
  } catch {
    // No table: only numeric ports work, as with a libc that finds none.
  }
  services = [];
  for (const line of text.split("\n")) {
    const words = line.replace(/#.*/, "").trim().split(/\s+/);
    const m = words[1]?.match(/^(\d+)\/tcp$/);
    if (!m) continue;
    for (const name of [words[0], ...words.slice(2)]) services.push({ name, port: Number(m[1]) });
  }
  return services;
}

/** The tcp service name of a port, for "listening on port 119 (nntp)". */
export function serviceName(port: number): string | undefined {
  return serviceTable().find((s) => s.port === port)?.name;
}

function parsePort(text: string, server: boolean): number {
  if (/^\d+$/.test(text)) {
    const port = Number(text);
    // socket 1.1 wrapped ports modulo 65536; a typo must not reach another service.
    if (port > 65535) throw new Fatal(`port ${text} is out of range (0-65535)`, EXIT_UNKNOWN_SERVICE);
    if (port === 0 && !server) throw new Fatal("port 0 is only for servers (any free port)", EXIT_UNKNOWN_SERVICE);
    return port;
  }
  const found = serviceTable().find((s) => s.name === text);
  if (!found) {
    // A word with a dot is more likely a file name than a service (`-s rel.sock`):
    // only a destination with a slash is a UNIX path, so say how to write one.
    const hint = text.includes(".") || fs().existsSync(text) ? `; a UNIX socket path needs a slash: ./${text}` : "";
    throw new Fatal(`unknown service ${text} (not a port number nor a tcp name in /etc/services${hint})`, EXIT_UNKNOWN_SERVICE);
  }
  return found.port;
}

/**
 * Every address of `host`, the one to use first first: a literal is
 * itself; a name's IPv4 addresses come before its IPv6 ones (socket(1)'s
 * gethostbyname knew only IPv4, so `localhost` is 127.0.0.1 even where
 * /etc/hosts lists ::1 for it too and getaddrinfo puts that first), each
 * family in getaddrinfo's order, so /etc/hosts wins as it does for every
 * other program.
 */
export async function resolveHostAll(host: string): Promise<HostAddress[]> {
  const literal = ipFamily(host);
  if (literal) return [{ ip: host, family: literal }];
  let found: HostAddress[] = [];
  try {
    found = (await Bun.dns.lookup(host, { backend: "system" })).map((a) => ({ ip: a.address, family: a.family === 6 ? 6 : 4 }));
  } catch {
    // reported below, as socket(1) reports it
  }
  const unique = found.filter((a, i) => found.findIndex((b) => b.ip === a.ip) === i);
  const ordered = [...unique.filter((a) => a.family === 4), ...unique.filter((a) => a.family === 6)];
  if (ordered.length === 0) throw new Fatal(`unknown host ${host}`, EXIT_UNKNOWN_HOST);
  return ordered;
}

/**
 * Resolves names and checks limits. UNIX paths become absolute, so a server
 * that changes directory (-b) still finds and unlinks its own socket.
 */
export async function resolveDestination(destination: Destination, server: boolean): Promise<Address> {
  if (destination.kind === "passed") {
    const passed = passedSocket();
    if (passed.family === "unix") return { kind: "unix", path: passed.path };
    return { kind: "inet", ip: passed.ip, family: passed.ip.includes(":") ? 6 : 4, port: passed.port, service: undefined };
  }
  if (destination.kind === "unix") {
    const path = nodePath().resolve(destination.path);
    if (Buffer.byteLength(destination.path) > UNIX_PATH_MAX && Buffer.byteLength(path) > UNIX_PATH_MAX) {
      throw new Fatal(`${destination.path}: UNIX socket path longer than ${UNIX_PATH_MAX} bytes`, 36 /* ENAMETOOLONG */);
    }
    return { kind: "unix", path: Buffer.byteLength(path) > UNIX_PATH_MAX ? destination.path : path };
  }
  const port = parsePort(destination.port, server);
  const [{ ip, family }, ...alternatives] = destination.host === undefined
    ? [{ ip: "0.0.0.0", family: 4 as const }]
    : await resolveHostAll(destination.host);
  const service = /^\d+$/.test(destination.port) ? undefined : destination.port;
  // A server binds the first address; a client tries the others when it cannot connect to it.
  return { kind: "inet", ip, family, port, service, ...(!server && alternatives.length > 0 && { alternatives }) };
}
