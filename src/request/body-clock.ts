// The time a request's body may take: its first `limit` (--timeout, or
// HEADER_TIMEOUT_MS), then a second more for every MIN_BODY_RATE bytes
// that came (as Apache's mod_reqtimeout: body=20,MinRate=500), counted
// from the end of the header. A web server relays a body far faster; a
// client that drips one a byte at a time must not hold a worker. Time the
// engine did not read because the program had not taken what came
// (backpressure) is the program's, not the client's: it does not count.
import { MIN_BODY_RATE } from "./cgi.ts";

/** When a body begun at `from` must have come, `received` bytes of it so far: the one rule, for every engine. */
export function bodyDue(from: number, limitMs: number, received: number): number {
  return from + limitMs + (received * 1000) / MIN_BODY_RATE;
}

export class BodyClock {
  private from = 0;
  /** Bytes of the body that came, kept or dropped. */
  received = 0;
  private pausedSince: number | undefined;
  private pausedMs = 0;

  /** The header has ended: the body's time starts. */
  start(now: number): void {
    this.from = now;
    this.received = this.pausedMs = 0;
    this.pausedSince = undefined;
  }

  /** The engine stops reading the connection (the program has not taken the body that came). */
  pause(now: number): void {
    this.pausedSince ??= now;
  }

  /** The engine reads the connection again. */
  resume(now: number): void {
    if (this.pausedSince === undefined) return;
    this.pausedMs += now - this.pausedSince;
    this.pausedSince = undefined;
  }

  get paused(): boolean {
    return this.pausedSince !== undefined;
  }

  /** When the body must have come, as far as it has. */
  due(limitMs: number): number {
    return bodyDue(this.from, limitMs, this.received) + this.pausedMs;
  }
}
