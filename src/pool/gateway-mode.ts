// How a gateway's pool worker serves a connection it accepted (--scgi,
// --fastcgi). Its own module, loaded by worker.ts only when a gateway is
// asked for: the gateways' code and what it loads would otherwise sit in
// every `-p` worker's heap.
import { cgiSource } from "../request/cgi.ts";
import { CLASSIC_MAX_CONNS } from "../request/fastcgi-engine.ts";
import { serveFastCgiDescriptor, stopWorkerConnection } from "../gateway/fastcgi-blocking.ts";
import { serveScgiDescriptor } from "../gateway/scgi.ts";
import { MSG_DONTWAIT, MSG_PEEK, tryRecv } from "../system/socket.ts";
import { CONTROL_FD, LISTEN_FD, REOPEN, type Worker } from "./protocol.ts";

/** How a worker serves a connection it accepted; chosen once, at start (worker.ts). */
export interface Mode {
  /** Accept connections non-blocking: only where the worker alone uses them (the splice bridge, FastCGI). */
  readonly nonBlocking: boolean;
  serve(fd: number): Promise<unknown>;
  /** The worker drains: no connection is kept for a further request. */
  drain?(): void;
}

/** Whether the byte waiting on the control socket is `word` (left there for the worker to read). */
function nextWordIs(word: number): boolean {
  const byte = new Uint8Array(1);
  return tryRecv(CONTROL_FD, byte, MSG_PEEK | MSG_DONTWAIT) === 1 && byte[0] === word;
}

export function gatewayMode({ options, address }: Worker, noteRequest?: (request: string) => void): Mode {
  const source = cgiSource(options, noteRequest);
  if (options.gateway === "scgi") {
    return { nonBlocking: false, serve: (fd) => serveScgiDescriptor(fd, address, options, source) };
  }
  // Between requests on a kept connection the listener (a waiting connection takes this worker) and
  // the master's word (retire, leave, or its end: read after the connection) end it, or a web server
  // keeping it for ever would hold this worker, and a HUP would never replace it.
  const pool = { listener: LISTEN_FD, control: CONTROL_FD, ends: () => !nextWordIs(REOPEN) };
  const maxConns = options.pool?.max ?? CLASSIC_MAX_CONNS;
  return { nonBlocking: true, serve: (fd) => serveFastCgiDescriptor(fd, options, source, maxConns, pool), drain: stopWorkerConnection };
}
