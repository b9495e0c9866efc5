// The one entry from src/connection/serve.ts: a connection of a server
// started with --scgi or --fastcgi, from a worker's accept or Bun's listener.
import type { Socket } from "bun";
import type { Copy } from "../connection/copy.ts";
import type { ServeOptions } from "../connection/serve.ts";
import { adoptDescriptor, adoptSocket, type Handler } from "./connection.ts";
import { CLASSIC_MAX_CONNS, FastCgiHandler } from "./fastcgi.ts";
import { ScgiHandler, serveScgiDescriptor } from "./scgi.ts";

/** A pool worker's listening socket (src/pool/worker.ts: the master passes it as fd 3). */
const POOL_LISTENER_FD = 3;

function handler(options: ServeOptions, command: string, listenerFd?: number): Handler {
  if (options.gateway === "scgi") return new ScgiHandler(options, command);
  return new FastCgiHandler(options, command, options.pool?.max ?? CLASSIC_MAX_CONNS, listenerFd);
}

/** A worker's connection: SCGI reads its header itself and hands the connection over; FastCGI runs on Bun's loop. */
export async function serveGatewayDescriptor(fd: number, options: ServeOptions): Promise<void> {
  const command = options.program!;
  if (options.gateway === "scgi") return serveScgiDescriptor(fd, options, command);
  const fastcgi = handler(options, command, POOL_LISTENER_FD);
  await adoptDescriptor(fd, fastcgi);
  await fastcgi.done;
}

/** A connection Bun's listener accepted (-f, or a plain -s). */
export function serveGatewaySocket(socket: Socket<Copy | undefined>, options: ServeOptions): Promise<void> {
  const served = handler(options, options.program!);
  adoptSocket(socket, served);
  return served.done;
}
