// The splice bridge: joins a connection to a program's pipes inside the
// kernel with splice(2), so no byte enters user space. Used by pool workers
// only (--prestart, and -q): it blocks the JavaScript thread in poll(2)
// while the connection lasts, which a worker can afford (it has nothing else
// to do) and the classic server's one event loop cannot.
//
//   peer -> program's stdin pipe     peer's EOF: that pipe is closed (EOF for the program)
//   program's output pipe -> peer    its EOF: the connection is shut down and closed
//
// EPIPE on the stdin pipe (the program stopped reading) ends that direction
// only. --timeout is poll's timeout since the last byte moved either way.
import { close, SPLICE_F_MOVE, SPLICE_F_NONBLOCK, trySplice } from "../system/fd.ts";
import { EAGAIN, EINTR, strerror } from "../system/ffi.ts";
import { isReadable, POLLIN, POLLOUT, tryPoll } from "../system/poll.ts";
import { resetOnClose, SHUT_RDWR, shutdown } from "../system/socket.ts";
import { nextTick } from "../system/signals.ts";
import { say } from "../system/log.ts";

export interface BridgeEnds {
  /** The connection: non-blocking when the worker alone holds it. */
  conn: number;
  /** Write end of the program's stdin pipe; -1 when the program reads the connection itself (-q). */
  input: number;
  /** Read end of the one pipe that carries the program's stdout and stderr. */
  output: number;
}

export interface BridgeOptions {
  /** -q: say "connection closed" when the program's output ends. */
  quit: boolean;
  timeoutMs: number | undefined;
  log: (line: string) => void;
}

/** Upper bound per splice; a pipe moves at most its capacity (64 KiB by default) at a time. */
const CHUNK = 1 << 20;

/** One direction. EAGAIN does not say which side was not ready, so `blocked` remembers it. */
interface Flow {
  from: number;
  to: number;
  blocked: "read" | "write" | null;
  open: boolean;
}

// struct pollfd { int fd; short events; short revents; } as two int32 (little-endian).
const pollfds = new Int32Array(4);
/** One splice on a flow that is not known to be blocked. */
function step(flow: Flow): "moved" | "blocked" | "eof" | "error" | "interrupted" {
  const moved = trySplice(flow.from, flow.to, CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  if (moved > 0) return "moved";
  if (moved === 0) return "eof";
  if (moved === -EINTR) return "interrupted";
  if (moved !== -EAGAIN) return "error";
  // The source has bytes, so the destination is full; or the source is empty.
  flow.blocked = isReadable(flow.from) ? "write" : "read";
  return "blocked";
}

/** Resolves when the connection is closed (the program may still run). */
export async function bridge(ends: BridgeEnds, options: BridgeOptions): Promise<void> {
  const input: Flow | null = ends.input >= 0 ? { from: ends.conn, to: ends.input, blocked: null, open: true } : null;
  const output: Flow = { from: ends.output, to: ends.conn, blocked: null, open: true };
  const flows = input ? [input, output] : [output];
  const endInput = () => {
    if (!input?.open) return;
    input.open = false;
    close(ends.input); // EOF for the program
  };
  let lastMove = Date.now();
  let timedOut = false;

  while (output.open) {
    let again = false;
    for (const flow of flows) {
      if (!flow.open || flow.blocked) continue;
      const result = step(flow);
      if (result === "moved") {
        again = true;
        lastMove = Date.now();
      } else if (result === "interrupted") {
        again = true;
        await nextTick(); // let signal handlers run
      } else if (result === "eof" || result === "error") {
        if (flow === input) {
          if (result === "eof") options.log("connection closed by peer");
          endInput(); // the peer is done, or the program stopped reading: this direction only
        } else {
          flow.open = false; // the program's output ended, or the peer is gone
        }
      }
    }
    if (again || !output.open) continue;

    // Every open direction waits: sleep until one of them can go on.
    const open = flows.filter((f) => f.open);
    open.forEach((flow, i) => {
      pollfds[2 * i] = flow.blocked === "read" ? flow.from : flow.to;
      pollfds[2 * i + 1] = flow.blocked === "read" ? POLLIN : POLLOUT;
    });
    const wait = options.timeoutMs === undefined ? -1 : Math.max(0, lastMove + options.timeoutMs - Date.now());
    const ready = tryPoll(pollfds, open.length, Math.ceil(wait));
    if (ready === -EINTR) {
      await nextTick();
      continue;
    }
    if (ready === 0) {
      timedOut = true;
      break;
    }
    if (ready < 0) {
      say(`poll: ${strerror(-ready)}`);
      break; // this connection fails, the worker goes on
    }
    // revents (the high half) of each entry; error and hang-up count as ready: splice reports them.
    open.forEach((flow, i) => {
      if (pollfds[2 * i + 1] >>> 16 !== 0) flow.blocked = null;
    });
  }

  endInput();
  close(ends.output); // a program still writing gets EPIPE, as on a closed socket
  if (timedOut) {
    options.log("connection timed out");
    // Reset, not FIN: a peer that stopped reading would never take the FIN.
    resetOnClose(ends.conn);
  } else {
    if (options.quit) options.log("connection closed");
    // Shut down, not only closed: under -q the program still holds the connection as its stdin.
    shutdown(ends.conn, SHUT_RDWR);
  }
  close(ends.conn);
}
