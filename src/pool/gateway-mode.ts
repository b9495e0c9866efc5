// How a gateway's pool worker serves a connection it accepted (--scgi,
// --fastcgi). Its own module, loaded by worker.ts only when a gateway is
// asked for: the gateways' code and what it loads would otherwise sit in
// every `-p` worker's heap.
import { adoptDescriptor } from "../connection/events.ts";
import { cgiSource, onRequest } from "../gateway/cgi.ts";
import { CLASSIC_MAX_CONNS, FastCgiHandler, stopKeptConnections } from "../gateway/fastcgi.ts";
import { serveScgiDescriptor } from "../gateway/scgi.ts";
import { isReadable } from "../system/libc.ts";
import { CONTROL_FD, LISTEN_FD, type Worker } from "./protocol.ts";

/** How a worker serves a connection it accepted; chosen once, at start (worker.ts). */
export interface Mode {
  /** Accept connections non-blocking: only where the worker alone uses them (the splice bridge). */
  readonly nonBlocking: boolean;
  serve(fd: number): Promise<unknown>;
  /** The worker drains: no connection is kept for a further request. */
  drain?(): void;
}

/** How often a worker holding a kept FastCGI connection looks for a word from its master. */
const KEPT_CHECK_MS = 100;

export function gatewayMode({ options, address }: Worker, noteRequest?: (request: string) => void): Mode {
  if (noteRequest) onRequest((method, uri) => noteRequest(`${method} ${uri}`));
  const source = cgiSource(options);
  if (options.gateway === "scgi") {
    return { nonBlocking: false, serve: (fd) => serveScgiDescriptor(fd, address, options, source) };
  }
  return {
    nonBlocking: false,
    serve: async (fd) => {
      // The listener: a kept connection gives way when another one waits there. The descriptor:
      // the program's output is spliced into it.
      const handler = new FastCgiHandler(options, source, options.pool?.max ?? CLASSIC_MAX_CONNS, LISTEN_FD, fd);
      // A web server may keep the connection for ever: the master's word (retire, leave, or its
      // end, read after the connection) ends it too, or a HUP would never replace this worker.
      const heard = setInterval(() => isReadable(CONTROL_FD) && stopKeptConnections(), KEPT_CHECK_MS);
      try {
        await adoptDescriptor(fd, handler);
        await handler.done;
      } finally {
        clearInterval(heard);
      }
    },
    drain: stopKeptConnections,
  };
}
