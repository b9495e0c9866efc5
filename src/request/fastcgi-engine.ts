// What a FastCGI engine implements for the responder (fastcgi-responder.ts),
// and the limits both engines keep: the effects the responder asks for, its
// deadline's shape, and its configuration.
import type { GatewayOptions } from "../options.ts";
import type { Variable } from "./variables.ts";

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

/** What the engine does for the responder. */
export interface ResponderEffects {
  /** Bytes for the connection, in order: queued while it cannot take them. */
  send(bytes: Uint8Array): void;
  /** How many bytes wait for the connection. */
  queued(): number;
  /** Starts the request's program with these variables; the answer instead when it cannot or must not run. */
  start(variables: Variable[], stdin: BodyKind): Uint8Array | undefined;
  /** Body bytes for the program's stdin, in order. */
  writeBody(bytes: Uint8Array): void;
  /** The body has ended (held output may go): EOF to the program once it has taken what waits, or now with `drop`. */
  endBody(drop: boolean): void;
  /** A body without CONTENT_LENGTH, held whole before the program starts: its records appended; closed past --max-body or at an abort. */
  readonly spoolFile: { write(bytes: Uint8Array): void; close(): void };
  /** The program is told to stop (TERM, then KILL): the web server aborted its request, or --request-timeout ended it. */
  stopProgram(): void;
  /** The running program's pid, what it runs and the request's method and URI (--request-timeout's line). */
  program(): { pid: number; script: string; request: string } | undefined;
  /** No further request: close once what is queued has gone. */
  end(): void;
  /** Closes the connection now; the program, if any, is killed. */
  drop(): void;
}

/** When the connection is dropped unless something happens first, and the -v line saying why. */
export interface Deadline {
  at: number;
  why: string;
  /** --request-timeout's (request-deadline.ts): the request ends, not the connection. */
  overdue?: true;
}

/** What the responder needs of its connection's configuration. */
export interface ResponderConfig {
  options: GatewayOptions;
  /** FCGI_MAX_CONNS and FCGI_MAX_REQS for GET_VALUES. */
  maxConns: number;
  /**
   * A pool worker's connection: kept while its worker leaves or others wait
   * until quiet (kept.ts), and past --grace closed after its END_REQUEST.
   * Otherwise (-f) a leaving process closes an idle kept connection at once
   * and a busy one after its request.
   */
  pool: { graceMs: number } | undefined;
}

/**
 * The state a request is in: "none" between requests; "params" from
 * BEGIN_REQUEST to the empty PARAMS; "spooling" a body without
 * CONTENT_LENGTH (or one refused past --max-body) to its end; "running" the
 * program started, its body streaming until `bodyEnded`.
 */
export type Phase = "none" | "params" | "spooling" | "running";
