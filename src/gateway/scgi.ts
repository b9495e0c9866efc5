// A pool worker's SCGI connection: its header read by the blocking engine,
// then served by it, or, under --timeout on a UNIX socket (idle time is
// measured on the bytes moved, so they are copied) or --request-timeout (a
// 504 only while no byte of the answer went: they are counted, so copied),
// by the evented one.
import { adoptDescriptor } from "../connection/events.ts";
import type { Address } from "../net/address.ts";
import type { GatewayOptions } from "../options.ts";
import { close } from "../system/fd.ts";
import { gatewayLog, type CgiSource } from "../request/cgi.ts";
import { readScgiHeader, serveScgiBlocking } from "./scgi-blocking.ts";
import { ScgiHandler } from "./scgi-evented.ts";

export async function serveScgiDescriptor(fd: number, address: Address, options: GatewayOptions, source: CgiSource): Promise<void> {
  const request = readScgiHeader(fd, options);
  if ("error" in request) {
    gatewayLog(options, "scgi", request.error);
    close(fd);
    return;
  }
  const copied = (options.timeoutMs !== undefined && address.kind === "unix") || options.requestTimeoutMs !== undefined;
  if (!copied) return serveScgiBlocking(fd, address, options, source, request);
  const handler = new ScgiHandler(options, source, request);
  await adoptDescriptor(fd, handler);
  await handler.done;
}
