// --max-per-source: how many connections one source may hold at once (as
// systemd's MaxConnectionsPerSource= and tcpsvd's -C). A source is the
// remote address for TCP and the peer's uid for UNIX sockets (the only
// identity a local peer has; its pid changes with every connection).
import { Fatal } from "../fatal.ts";
import type { Address } from "../net/address.ts";
import { AccessRules } from "../net/rules.ts";
import type { Options } from "../options.ts";
import { peerCredentials, remoteEndpoint } from "../system/socket.ts";

/** The source of an accepted connection; undefined when the peer is already gone. */
export function sourceOf(fd: number, address: Address): string | undefined {
  try {
    if (address.kind === "unix") return `uid ${peerCredentials(fd).uid}`;
    const peer = remoteEndpoint(fd);
    return peer.family === "inet" ? peer.ip : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The peer's address for -v (socket 1.1 printed the address when no name
 * resolved), an IPv4-mapped one as IPv4 (system/sockaddr.ts), as its
 * program's TCPREMOTEIP says it.
 */
export function peerIp(fd: number): string {
  try {
    const peer = remoteEndpoint(fd);
    return peer.family === "inet" ? peer.ip : peer.path;
  } catch {
    return "a peer already gone";
  }
}

/** The -v line for a connection closed because its source has too many. */
export function rejectedLine(address: Address, source: string, max: number): string {
  return `${address.kind === "unix" ? "unix" : "inet"}: ${source} has ${max} connections (--max-per-source): closed`;
}

/** Live connections per source; a source at the limit is refused. */
export class SourceLimit {
  private readonly live = new Map<string, number>();

  constructor(readonly max: number) {}

  /** Counts the connection in and says yes, or says no and counts nothing. */
  admit(source: string): boolean {
    const n = this.live.get(source) ?? 0;
    if (n >= this.max) return false;
    this.live.set(source, n + 1);
    return true;
  }

  release(source: string): void {
    const n = (this.live.get(source) ?? 1) - 1;
    if (n > 0) this.live.set(source, n);
    else this.live.delete(source); // a map of every address ever seen would grow without bound
  }
}

/**
 * --allow/--deny for a server on `address`; undefined without rules. A
 * UNIX socket (a passed one included: the command line could not tell)
 * has no address to match, so rules there are refused, not ignored.
 */
export function accessRules(options: Pick<Options, "access">, address: Address): AccessRules | undefined {
  if (options.access.length === 0) return undefined;
  if (address.kind === "unix") throw new Fatal("--allow and --deny are for a TCP server (a UNIX socket has --mode, -u and -g)", 15);
  return new AccessRules(options.access);
}

/**
 * Checks an accepted TCP connection: undefined when it may be served; else
 * the peer's address (or why it has none), and the caller closes it unread.
 */
export function refusedPeer(rules: AccessRules, fd: number): string | undefined {
  let ip: string;
  try {
    const peer = remoteEndpoint(fd);
    if (peer.family !== "inet") return "a peer with no IP address";
    ip = peer.ip;
  } catch {
    return "a peer already gone";
  }
  return rules.permits(ip) ? undefined : ip;
}
