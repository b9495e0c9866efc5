// Lines for the operator on socket's own stderr. One small helper per kind
// of line (as s6 does): `warn` is always printed, but at most once a second
// for the same cause, so a broken program behind a busy port cannot flood
// the log; `verbose` lines only with -v.

const RATE_MS = 1000;
const lastSaid = new Map<string, number>();

/**
 * Prints `socket: LINE` unless the same `cause` was reported less than a
 * second ago (per process: each pool worker limits its own lines).
 */
export function warn(cause: string, line: string): void {
  const now = Date.now();
  const last = lastSaid.get(cause);
  if (last !== undefined && now - last < RATE_MS) return;
  lastSaid.set(cause, now);
  if (lastSaid.size > 1000) lastSaid.clear(); // causes name programs: a handful; never grows unbounded
  process.stderr.write(`socket: ${line}\n`);
}
