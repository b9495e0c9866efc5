// Bun calls one table of socket handlers for every socket of a listener or
// a Bun.connect; the state of each connection rides on socket.data. Every
// kind of connection socket serves with Bun's loop (the copy loop, the SCGI
// and FastCGI handlers) implements SocketEvents, and this one table calls it.
import type { Socket, SocketHandler } from "bun";

/** What the handler table calls on socket.data. */
export interface SocketEvents {
  attach(socket: Socket<SocketEvents | undefined>): void;
  onData(chunk: Uint8Array): void;
  onEnd(): void;
  onDrain(): void;
  onClose(error?: Error): void;
}

export type EventSocket = Socket<SocketEvents | undefined>;

/** socket.data is undefined for a connection handed to a program: nothing to call. */
export const eventHandlers: SocketHandler<SocketEvents | undefined> = {
  open: (socket) => socket.data?.attach(socket),
  data: (socket, chunk) => socket.data?.onData(chunk),
  end: (socket) => socket.data?.onEnd(),
  drain: (socket) => socket.data?.onDrain(),
  close: (socket, error) => socket.data?.onClose(error),
  error: (socket, error) => socket.data?.onClose(error),
};

/** Puts `events` behind a socket Bun's listener accepted (called from its open handler). */
export function adoptSocket(socket: EventSocket, events: SocketEvents): void {
  socket.data = events;
  events.attach(socket);
}

declare module "bun" {
  /** Bun.connect on a connected descriptor: Bun takes `fd` (verified), though its types list only host and unix. */
  interface DescriptorSocketOptions<Data> {
    fd: number;
    socket: SocketHandler<Data>;
    data: Data;
    allowHalfOpen?: boolean;
  }
  function connect<Data = undefined>(options: DescriptorSocketOptions<Data>): Promise<Socket<Data>>;
}

/** Bun's loop adopts a connected descriptor (a worker's accept, a client's connect). */
export function adoptDescriptor(fd: number, events: SocketEvents): Promise<unknown> {
  return Bun.connect<SocketEvents | undefined>({ fd, socket: eventHandlers, data: events, allowHalfOpen: true });
}
