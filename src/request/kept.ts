// A kept FastCGI connection in a pool worker, between two requests: when it
// may be closed, and how long its next header may take. A worker serves one
// connection at a time, so a kept connection holds the worker; yet closing
// one races with a request the web server may be sending on it (nginx
// retries a GET on another connection, never a POST: the client gets 502).
//
// - A kept connection is closed only once it has been quiet (no byte, no
//   request) for KEPT_IDLE_MS: when another connection waits at the
//   listener, or when this worker leaves (HUP, USR2, TTOU, a drain,
//   --max-requests, -W MIN:MAX's --idle-timeout). Web servers reuse their
//   most recently used connection first, so one quiet that long is not
//   about to carry a request, and nginx drops a cached connection it sees
//   closed. Until then every request that arrives on it is served. A
//   leaving worker treats a connection that has not had a request yet so
//   too: a web server sends one right after it connects.
// - While another connection waits, or this worker leaves, a kept
//   connection's next header must be complete within KEPT_HEADER_MS: a web
//   server sends a header at once, and a client dripping one must not
//   hold the worker (HEADER_TIMEOUT_MS a header otherwise) while others wait.
// - A connection that carries whole requests back to back never goes
//   quiet, and is not cut while others wait: it is the worker's work, as a
//   long request is; keep nginx's `keepalive` no larger than the pool.
// - A leaving worker's busy connection ends with its next END_REQUEST, the
//   FIN in the same TCP segment (MSG_MORE, then shutdown): the web server
//   reads the end with the answer and caches nothing (nginx checks a
//   connection it is about to keep for EOF). A FIN sent after the
//   END_REQUEST, even at once, races with the next request nginx sends on
//   it, and a POST sent on a connection that closes is a 502 (nginx
//   retries only idempotent requests).

/** How long a kept connection must have been quiet before it is closed for another connection or a leaving worker. */
export const KEPT_IDLE_MS = 250;

/** How long a kept connection's next header may take while another connection waits, or its worker leaves. */
export const KEPT_HEADER_MS = 1000;

export interface KeptState {
  now: number;
  /** Since when no byte has come and no request ended (the accept, at first). */
  quietSince: number;
  /** Nothing of a next request has come: closing loses nothing. */
  idle: boolean;
  /** Since when this worker has been leaving; undefined: it is not. */
  leavingSince: number | undefined;
  /** Whether another connection waits at the listener (asked only when it matters). */
  othersWait(): boolean;
  /** Since when this header has been hurried (others waiting or leaving); undefined: not yet. */
  hurrySince: number | undefined;
}

/** What becomes of a kept connection now: closed (the -v line's reason), its header hurried since a time, or nothing. */
export type KeptVerdict = { close: string } | { hurrySince: number; why: string } | undefined;

export function keptVerdict(state: KeptState): KeptVerdict {
  const { now, quietSince, idle, leavingSince, hurrySince } = state;
  const quiet = idle && now - quietSince >= KEPT_IDLE_MS;
  if (leavingSince !== undefined) {
    if (quiet) return { close: "closing an idle kept connection: this worker is leaving" };
    return { hurrySince: hurrySince ?? now, why: "no complete request in time while this worker leaves" };
  }
  if (!state.othersWait()) return undefined;
  if (quiet) return { close: "closing an idle kept connection: another connection is waiting" };
  return { hurrySince: hurrySince ?? now, why: "no complete request in time while another connection waits" };
}
