// --send-timeout, the one rule for both gateways and both engines: an
// answer the web server takes no byte of for this long ends the request, as
// nginx's send_timeout ends a client's. A client that never reads must not
// hold a pool worker (or, under -f, a CGI and its buffers) for ever. It
// counts only while output waits for the connection: a CGI silent for a
// long time (computing) is not waiting to send, and every byte the web
// server takes starts it again. What ends it: the connection is dropped and
// the CGI's process group gets TERM, then KILL (the engines' endProgram, as
// --request-timeout's); one line says it, always; --status counts it with
// the request timeouts. The FastCGI engines keep a SendClock
// (fastcgi-engine.ts, with the responder's other clocks) where their output
// waits; SCGI under -f its copy loop's timer; SCGI in a pool, whose CGI writes to the connection itself, has the
// kernel's SO_SNDTIMEO instead (gateway/scgi-blocking.ts).
import { say } from "../system/log.ts";
import { printable } from "./request-deadline.ts";

/** What the line names: the protocol, the CGI (if one runs) and its request, how long nothing was taken. */
export interface Stalled {
  protocol: "scgi" | "fastcgi";
  program: { pid: number; script: string; request: string; counted?: () => void } | undefined;
  waitedMs: number;
}

/** The operator's line: `fastcgi: send-timeout: pid 1234 /srv/app.cgi GET /big: the web server took none of the answer for 60.0 s: connection dropped`. */
export function stalledLine({ protocol, program, waitedMs }: Stalled): string {
  const which = program ? `pid ${program.pid} ${printable(program.script)} ${printable(program.request)}: ` : "";
  return `${protocol}: send-timeout: ${which}the web server took none of the answer for ${(waitedMs / 1000).toFixed(1)} s: connection dropped`;
}

/** An answer stalled: the line said and the end counted. The engine then drops the connection and stops the CGI. */
export function sendStalled(o: Stalled): void {
  say(stalledLine(o));
  o.program?.counted?.();
}
