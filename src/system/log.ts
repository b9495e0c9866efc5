// Lines for the operator on socket's own stderr, all through here. One
// small helper per kind of line (as s6 does): `say` always, `warn` always
// but at most once a second for the same cause (a broken program behind a
// busy port must not flood the log), `verbose` only with -v.
//
// Each line is one write(2) to descriptor 2, never a stream: a write that
// fails (ENOSPC on a full --log disk, EAGAIN, EPIPE) is dropped and counted,
// and said once a write works again. A stream would report the failure as
// an error event, whose report would fail again: that loop kept a master
// busy on a whole core and left its pool unserved. The write is libc's
// (fd.ts), not node:fs's writeSync: a worker's start loads no node:fs
// (builtins.ts), and a failing worker's one line would have loaded it.
import { NAME } from "../version.ts";
import { EINTR } from "./ffi.ts";
import { tryWrite } from "./fd.ts";

const RATE_MS = 1000;
const lastSaid = new Map<string, number>();
let dropped = 0;

/** Writes `text` as it is (a line, or socket(1)'s "\n<Signal> occured, exiting\n"; a CGI's stderr line, bytes as they came). */
export function write(text: string | Uint8Array): void {
  const bytes = typeof text === "string" ? Buffer.from(text) : text;
  let written: number;
  do written = tryWrite(2, bytes);
  while (written === -EINTR);
  if (written < 0) {
    dropped++;
    return;
  }
  if (dropped === 0) return;
  const lost = dropped;
  dropped = 0;
  write(`${NAME}: ${lost} line${lost === 1 ? "" : "s"} could not be written to stderr and ${lost === 1 ? "was" : "were"} dropped\n`);
}

/** `socket: LINE`, always. */
export function say(line: string): void {
  write(`${NAME}: ${line}\n`);
}

/**
 * `socket: LINE` unless the same `cause` was reported less than a second
 * ago (per process: each pool worker limits its own lines). Whether it was
 * said, for a line that must answer it (a shortage's end).
 */
export function warn(cause: string, line: string): boolean {
  const now = Date.now();
  const last = lastSaid.get(cause);
  if (last !== undefined && now - last < RATE_MS) return false;
  lastSaid.set(cause, now);
  if (lastSaid.size > 1000) lastSaid.clear(); // causes name programs: a handful; never grows unbounded
  say(line);
  return true;
}

/** socket(1)'s -v lines ("inet: connection from ..."), only with -v. */
export function verbose(options: { verbose: boolean }, line: string): void {
  if (options.verbose) write(`${line}\n`);
}
