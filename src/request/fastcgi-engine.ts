// Between the FastCGI responder (fastcgi-responder.ts) and its two engines:
// what an engine implements for the responder (the effects it asks for, its
// deadline's shape, its configuration), the limits both engines keep, and
// the responder's clocks: a body's least rate (BodyClock), a running
// request's --request-timeout (RequestClock) and when a kept connection may
// be closed (keptVerdict).
import type { GatewayOptions } from "../options.ts";
import { bodyDue, type Variable } from "./cgi.ts";
import { requestOverdue } from "./request-deadline.ts";
import { sendStalled } from "./send-deadline.ts";

/** A request's variables when there are none yet. */
export const NO_VARIABLES: Variable[] = [];

/**
 * The program's output held until the end of its body (as fcgiwrap does:
 * nginx stops sending the body once it relays the answer's header, so a
 * CGI that writes its header first would never get the rest). Past this
 * much held, its output is no longer read: the CGI waits, not the body.
 */
export const HOLD_BYTES = 256 * 1024;

/**
 * Replies to what the client sends (UNKNOWN_TYPE, GET_VALUES_RESULT,
 * END_REQUEST refusals) are queued without waiting: a client that sends
 * such records and never reads would grow the queue without bound. Past
 * this many bytes waiting the connection is dropped.
 *
 * Why not stop reading instead: the queue also holds the program's output,
 * and a web server such as Apache sends the whole body before it reads any
 * answer. Pausing input because output waits would stop the body the
 * program may be waiting for, while the web server waits for us: a
 * deadlock. A bound far above the program's share never trips for a real
 * web server, which does not send hundreds of KiB of management records
 * without reading the replies.
 */
export const QUEUE_LIMIT = 256 * 1024;

/** FCGI_MAX_CONNS / FCGI_MAX_REQS advertised by -f, which has no fixed limit: advice to the web server, not enforced. */
export const CLASSIC_MAX_CONNS = 100;

/** What the program's stdin is: the body as it streams in, the spooled body's file, or nothing (an empty body). */
export type BodyKind = "pipe" | "spool" | "none";

/**
 * What the engine does for the responder. Why an effects interface rather than returned actions: the engine's
 * connection implements it once, as methods, so nothing is allocated per record (a list of actions would be, on
 * every read), and each engine's effects read as plain steps.
 */
export interface ResponderEffects {
  /** Bytes for the connection, in order: queued while it cannot take them. */
  /** `last`: nothing follows on this connection (the engine may send its end with these bytes). */
  send(bytes: Uint8Array, last?: boolean): void;
  /** How many bytes wait for the connection. */
  queued(): number;
  /** --send-timeout's clock (send-deadline.ts): told when output waits for the connection, and when the connection takes some. */
  readonly sending: SendClock;
  /** Starts the request's program with these variables; the answer instead when it cannot or must not run. */
  start(variables: Variable[], stdin: BodyKind): Uint8Array | undefined;
  /** Body bytes for the program's stdin, in order. */
  writeBody(bytes: Uint8Array): void;
  /** The body has ended (held output may go): EOF to the program once it has taken what waits, or now with `drop`. */
  endBody(drop: boolean): void;
  /** A body without CONTENT_LENGTH, held whole before the program starts: its records appended; closed past --max-body or at an abort. */
  readonly spoolFile: { write(bytes: Uint8Array): boolean; close(): void };
  /** The program is told to stop (TERM, then KILL): the web server aborted its request, or --request-timeout ended it. */
  stopProgram(): void;
  /** The running program's pid, what it runs and the request's method and URI (--request-timeout's line). */
  program(): { pid: number; script: string; request: string; counted?: () => void } | undefined;
  /** No further request: close once what is queued has gone. */
  end(): void;
  /** Closes the connection now; the program, if any, is killed (`stop`: told to stop, TERM then KILL, as stopProgram). */
  drop(stop?: boolean): void;
}

/** When the connection is dropped unless something happens first, and the -v line saying why. */
export interface Deadline {
  at: number;
  why: string;
  /** --request-timeout's (request-deadline.ts): the request ends, not the connection. */
  overdue?: true;
  /** --send-timeout's (send-deadline.ts): the web server took none of the answer; the line is said, the program stopped. */
  stalled?: true;
}

/** What the responder needs of its connection's configuration. */
export interface ResponderConfig {
  options: GatewayOptions;
  /** FCGI_MAX_CONNS and FCGI_MAX_REQS for GET_VALUES. */
  maxConns: number;
  /**
   * A pool worker's connection: kept while others wait until quiet
   * (keptVerdict); while its worker leaves, until quiet or its next
   * END_REQUEST. Otherwise (-f) a leaving process closes an idle kept
   * connection at once and one in a request, or not yet in its first
   * (a web server sends it right after connecting), after that request.
   */
  pool: boolean;
}

/**
 * The state a request is in: "none" between requests; "params" from
 * BEGIN_REQUEST to the empty PARAMS; "spooling" a body without
 * CONTENT_LENGTH (or one refused past --max-body) to its end; "running" the
 * program started, its body streaming until `bodyEnded`.
 */
export type Phase = "none" | "params" | "spooling" | "running";

/** --send-timeout's clock (send-deadline.ts): since when output has waited for the connection with nothing of it taken. */
export class SendClock {
  private since: number | undefined;

  /** Output waits: the connection took no more of it now. */
  blocked(now: number): void {
    this.since ??= now;
  }

  /** The connection took bytes, or nothing waits: the clock starts again at the next wait. */
  took(): void {
    this.since = undefined;
  }

  /** When the request ends unless the connection takes a byte first (Infinity: nothing waits, or no limit). */
  due(timeoutMs: number | undefined): number {
    return this.since === undefined || timeoutMs === undefined ? Infinity : this.since + timeoutMs;
  }

  /** How long output has waited. */
  waited(now: number): number {
    return this.since === undefined ? 0 : now - this.since;
  }
}

/**
 * The time a request's body may take (cgi.ts bodyDue), counted from the end
 * of the header. A web server relays a body far faster; a client that drips
 * one a byte at a time must not hold a worker. Time the engine did not read
 * because the program had not taken what came (backpressure) is the
 * program's, not the client's: it does not count.
 */
export class BodyClock {
  private from = 0;
  /** Bytes of the body that came, kept or dropped (came()), and when the last did. */
  received = 0;
  private lastAt = 0;
  private pausedSince: number | undefined;
  private pausedMs = 0;
  /** A refused body's answer at its end (413, or a program's that does not run); its rest is dropped. */
  refused: Uint8Array | undefined;
  private refusedAt = Infinity;

  /** The header has ended: the body's time starts. */
  start(now: number): void {
    this.from = this.lastAt = now;
    this.received = this.pausedMs = 0;
    this.pausedSince = this.refused = undefined;
    this.refusedAt = Infinity;
  }

  /** The body is refused: what is left of it is dropped within the first limit from now, not at the least rate. */
  refuse(now: number, answer: Uint8Array): void {
    this.refused = answer;
    this.refusedAt = Math.min(this.refusedAt, now);
  }

  /** `bytes` of the body came now. */
  came(bytes: number, now: number): void {
    this.received += bytes;
    this.lastAt = now;
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
    this.lastAt = now; // the wait was the program's
  }

  get paused(): boolean {
    return this.pausedSince !== undefined;
  }

  /** When the body must have come, as far as it has. */
  due(limitMs: number): number {
    return Math.min(bodyDue(this.from + this.pausedMs, limitMs, this.received, this.lastAt), this.refusedAt + limitMs);
  }
}

// A kept FastCGI connection in a pool worker, between two requests: when it
// may be closed, and how long its next header may take. A worker serves one
// connection at a time, so a kept connection holds the worker; yet closing
// one races with a request the web server may be sending on it (nginx
// retries a GET on another connection, never a POST: the client gets 502).
//
// - A kept connection is closed only once it has been quiet (no byte, no
//   request) for KEPT_IDLE_MS: when another connection waits at the
//   listener, or when this worker stops (a drain: TERM, INT, -W MIN:MAX's
//   --idle-timeout, the master's end; not --max-requests, which counts a
//   kept connection as one, ended by the web server). Web servers reuse their
//   most recently used connection first, so one quiet that long is not
//   about to carry a request, and nginx drops a cached connection it sees
//   closed. Until then every request that arrives on it is served, and
//   the engine reads what came before it asks this rule, so a request that
//   comes as the connection is found quiet is served, not closed on. A
//   leaving worker treats a connection that has not had a request yet so
//   too: a web server sends one right after it connects.
// - A worker retired while the service goes on (HUP, USR2, TTOU) never
//   ends a kept connection itself: every request that comes on it is
//   served and the connection kept, until the web server closes it (nginx
//   at its upstream keepalive_timeout, keepalive_requests or
//   keepalive_time), or the idle limit does (a header's deadline, 30 s or
//   --timeout), or the worker is told to stop. Any close of ours races
//   with the request the web server may be sending on it, even a FIN in
//   the END_REQUEST's segment: nginx reads that segment's bytes, and its
//   end only at its next wake-up, when what arrived after its last one
//   (the answer's tail, then END_REQUEST and FIN) is read at once; a
//   request taken from its cache meanwhile meets the reset. A reload must
//   not lose one; the old worker lingers instead.
// - While another connection waits, or this worker leaves, a kept
//   connection's next header must be complete within KEPT_HEADER_MS: a web
//   server sends a header at once, and a client dripping one must not
//   hold the worker (HEADER_TIMEOUT_MS a header otherwise) while others wait.
// - A connection that carries whole requests back to back never goes
//   quiet, and is not cut while others wait: it is the worker's work, as a
//   long request is; keep nginx's `keepalive` no larger than the pool.
// - But a hurried header that comes whole only after KEPT_IDLE_MS was
//   dripped (a web server sends one at once, and a header idle that long
//   would have been closed): its request is served and ends the connection
//   (draggedHeader), or a client completing each header just before
//   KEPT_HEADER_MS would hold the worker request after request. Measured
//   from the hurry, not the first byte: a byte now and then must not
//   restart it. A web server's header read late (a busy machine) only
//   costs it a new connection: the end goes with the END_REQUEST.
// - A stopping worker's busy connection (TERM, INT, the master's end;
//   -f's drain) ends with its next END_REQUEST, the FIN in the same TCP
//   segment (MSG_MORE, then shutdown): the web server mostly reads the end
//   with the answer and caches nothing (nginx checks a connection it is
//   about to keep for EOF). A FIN sent after the END_REQUEST, even at
//   once, races with the next request nginx sends on it, and a POST sent
//   on a connection that closes is a 502 (nginx retries only idempotent
//   requests). A stop must end in bounded time; a retirement need not.

/** How long a kept connection must have been quiet before it is closed for another connection or a leaving worker. */
export const KEPT_IDLE_MS = 250;

/** How long a kept connection's next header may take while another connection waits, or its worker leaves. */
export const KEPT_HEADER_MS = 1000;

export interface KeptState {
  now: number;
  /** Since when no byte has come and no request ended (the accept, at first). */
  quietSince: number;
  /** Nothing of a next request has come: closing loses nothing. */
  idle: boolean;
  /** Since when this worker has been leaving; undefined: it is not. */
  leavingSince: number | undefined;
  /** Leaving as a retirement (the service goes on), not a stop. */
  retiring: boolean;
  /** Whether another connection waits at the listener (asked only when it matters). */
  othersWait(): boolean;
  /** Since when this header has been hurried (others waiting or leaving); undefined: not yet. */
  hurrySince: number | undefined;
}

/** What becomes of a kept connection now: closed (the -v line's reason), its header hurried since a time, or nothing. */
export type KeptVerdict = { close: string } | { hurrySince: number; why: string } | undefined;

/** Whether a header, whole now, dragged on past KEPT_IDLE_MS after it was hurried: its request ends the connection. */
export function draggedHeader(hurrySince: number | undefined, now: number): boolean {
  return hurrySince !== undefined && now - hurrySince > KEPT_IDLE_MS;
}

export function keptVerdict(state: KeptState): KeptVerdict {
  const { now, quietSince, idle, leavingSince, hurrySince } = state;
  const quiet = idle && now - quietSince >= KEPT_IDLE_MS;
  if (leavingSince !== undefined) {
    if (idle && state.retiring) return undefined;
    if (quiet) return { close: "closing an idle kept connection: this worker is leaving" };
    return { hurrySince: hurrySince ?? now, why: "no complete request in time while this worker leaves" };
  }
  if (!state.othersWait()) return undefined;
  if (quiet) return { close: "closing an idle kept connection: another connection is waiting" };
  return { hurrySince: hurrySince ?? now, why: "no complete request in time while another connection waits" };
}

/** When a request whose program started at `from` is due (Infinity: no --request-timeout, or not running). */
export function requestDue(from: number | undefined, timeoutMs: number | undefined): number {
  return from === undefined || timeoutMs === undefined ? Infinity : from + timeoutMs;
}

/** The running request's clock, for the FastCGI responder: when its program started, whether it answered, whether it was ended. */
export class RequestClock {
  private from: number | undefined;
  /** A STDOUT record of the program's went to the web server. */
  answered = false;
  /** Ended by --request-timeout: the rest of the program's output is dropped. */
  cut = false;

  /** The program has started. */
  start(now: number): void {
    this.from = now;
    this.answered = this.cut = false;
  }

  /** A byte of the answer is going out. */
  answering(): void {
    this.answered = true;
  }

  /** Its deadline, or undefined (none, or ended already). */
  deadline(timeoutMs: number | undefined): Deadline | undefined {
    const at = requestDue(this.from, timeoutMs);
    return at === Infinity ? undefined : { at, why: "request-timeout", overdue: true };
  }

  /** It is overdue: how long it ran; it is cut and its deadline gone. */
  end(now: number): number {
    const ran = now - (this.from ?? now);
    this.from = undefined;
    this.cut = true;
    return ran;
  }
}

/** The sooner of two deadlines (the first when both fall due together). */
export function sooner(a: Deadline | undefined, b: Deadline | undefined): Deadline | undefined {
  return a === undefined || (b !== undefined && b.at < a.at) ? b : a;
}

/** --send-timeout's deadline while output waits for the connection (send-deadline.ts), or undefined. */
export function sendDeadline(sending: SendClock, timeoutMs: number | undefined): Deadline | undefined {
  const at = sending.due(timeoutMs);
  return at === Infinity ? undefined : { at, why: "send-timeout", stalled: true };
}

/**
 * The web server took none of the answer for --send-timeout: the line, the count, the program told to stop (TERM, then
 * KILL) as the connection drops. A request --request-timeout has ended already (`ended`) had its line and its count.
 */
export function endStalled(effects: ResponderEffects, now: number, ended: boolean): void {
  if (!ended) sendStalled({ protocol: "fastcgi", program: effects.program(), waitedMs: effects.sending.waited(now) });
  effects.stopProgram();
  effects.drop(true);
}

/**
 * A FastCGI request overdue (its program's body is over already): the line,
 * the program and its group told to stop, EOF on its stdin; the 504 to send
 * as a STDOUT record when nothing was answered. The rest of its output is
 * dropped (`clock.cut`); its exit ends the request with END_REQUEST.
 */
export function endOverdue(clock: RequestClock, effects: ResponderEffects, now: number): Uint8Array | undefined {
  const program = effects.program();
  const ranMs = clock.end(now);
  const answer = program && requestOverdue({ protocol: "fastcgi", ...program, ranMs, answered: clock.answered });
  effects.stopProgram();
  effects.endBody(true);
  return answer;
}
