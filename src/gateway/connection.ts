// What both gateways share about the connection: the handler a Bun socket
// calls (through copy.ts's handler table, with the handler as socket.data),
// adopting a worker's descriptor, and the -v lines.
import { verbose } from "../system/log.ts";
import type { Socket } from "bun";
import { copyHandlers, type Copy } from "../connection/copy.ts";

/** The calls copy.ts's handler table makes on socket.data. */
export interface Handler {
  attach(socket: Socket<unknown>): void;
  onData(chunk: Uint8Array): void;
  onEnd(): void;
  onDrain(): void;
  onClose(): void;
  /** Resolves when the connection is closed and its program is gone. */
  readonly done: Promise<void>;
}

/** -v: why a gateway connection was closed (bad request, timeout, ...). */
export function gatewayLog(options: { verbose: boolean }, protocol: "scgi" | "fastcgi", line: string): void {
  verbose(options, `${protocol}: ${line}`);
}

/**
 * Puts the handler behind a socket Bun's listener accepted. The classic
 * server's handler table is copy.ts's, which calls socket.data's methods:
 * a Handler has the same ones, so it rides there in Copy's place.
 */
export function adoptSocket(socket: Socket<Copy | undefined>, handler: Handler): void {
  socket.data = handler as unknown as Copy;
  handler.attach(socket as Socket<unknown>);
}

/** A worker's accepted descriptor, adopted by Bun's event loop (as serve.ts does for the copy loop). */
export function adoptDescriptor(fd: number, handler: Handler): Promise<unknown> {
  const options = { fd, socket: copyHandlers, data: handler, allowHalfOpen: true };
  return Bun.connect(options as unknown as Parameters<typeof Bun.connect<Copy | undefined>>[0]);
}
