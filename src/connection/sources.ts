// --max-per-source: how many connections one source may hold at once (as
// systemd's MaxConnectionsPerSource= and tcpsvd's -C). A source is the
// remote address for TCP and the peer's uid for UNIX sockets (the only
// identity a local peer has; its pid changes with every connection).
import type { Address } from "../net/address.ts";
import { peerCredentials, remoteEndpoint } from "../system/libc.ts";

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
