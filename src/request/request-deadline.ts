// --request-timeout, the one rule for every engine: a request (SCGI,
// FastCGI, or a plain -p connection) runs at most this long from the moment
// its program starts (its header read: a body spooled before the program
// counts for the header's and the body's deadlines, not this one). Unlike
// --timeout it is not restarted by bytes moving: a CGI that prints for ever
// is ended too. What ends it: the program's process group gets TERM, then
// KILL KILL_AFTER_MS later (the engines' endProgram); the web server gets
// `Status: 504 Gateway Timeout` only when no byte of the answer went out
// (else the answer is cut: SCGI closes, FastCGI ends the request with
// END_REQUEST and keeps its connection); a plain connection gets nothing
// written. One line says it, always; --status counts it. The FastCGI
// responder's clock for it is with its other clocks (fastcgi-engine.ts).
import { say } from "../system/log.ts";

/** The answer to a request ended before a byte of its own answer went out. */
export const GATEWAY_TIMEOUT = new TextEncoder().encode("Status: 504 Gateway Timeout\r\nContent-Type: text/plain\r\n\r\n504 Gateway Timeout\n");

/** What the line names: the program's pid and what it runs, the request (method and URI; none for -p), how long it ran. */
export interface Overdue {
  protocol: "scgi" | "fastcgi" | undefined;
  pid: number;
  script: string;
  request: string | undefined;
  ranMs: number;
  /** Whether a byte of the answer went out; undefined: a plain connection, where nothing is written. */
  answered: boolean | undefined;
  /** Whom to tell (a pool worker tells its master, for --status). */
  counted?: () => void;
}

/** A client's bytes (the URI, a script it named) as part of a line: they must not make lines of their own. */
export function printable(s: string): string {
  return s.slice(0, 200).replace(/[^\x20-\x7e]/g, "?");
}

/** The operator's line: `fastcgi: request-timeout: pid 1234 /srv/app.cgi GET /app.cgi?x=1 ran 30.0 s, ended (504 sent)`. */
export function overdueLine(o: Overdue): string {
  const text = printable;
  const request = o.request === undefined ? "" : ` ${text(o.request)}`;
  const what = o.answered === undefined ? "" : o.answered ? " (answer cut)" : " (504 sent)";
  return `${o.protocol === undefined ? "" : `${o.protocol}: `}request-timeout: pid ${o.pid} ${text(o.script)}${request} ran ${(o.ranMs / 1000).toFixed(1)} s, ended${what}`;
}

/** A request is overdue: the line said and the end counted; what the web server gets (undefined: nothing, the answer is cut). */
export function requestOverdue(o: Overdue): Uint8Array | undefined {
  say(overdueLine(o));
  o.counted?.();
  return o.answered === false ? GATEWAY_TIMEOUT : undefined;
}

/** A plain connection's program overdue (connection/serve.ts OnOverdue): the line and the count; nothing is written. */
export function plainOverdue(o: { pid: number; script: string; ranMs: number; counted?: () => void }): void {
  requestOverdue({ ...o, protocol: undefined, request: undefined, answered: undefined });
}
