// --request-timeout for a program on Bun's loop (a plain connection's
// program, an SCGI request's CGI): a timer from its start, cleared at its
// exit. At it the caller says and counts the end (the rule and its line are
// request/request-deadline.ts, which this layer cannot reach: the runner
// gives it), then the program and its process group get TERM, and KILL
// KILL_AFTER_MS later.
import { KILL_AFTER_MS } from "../system/reaper.ts";
import type { Process } from "./process.ts";

/** Ends `proc` (evented: its `exited` must not block) once it has run `timeoutMs`; `due` first, with how long it ran. */
export function endWhenDue(proc: Process, timeoutMs: number | undefined, due: (ranMs: number) => void): void {
  if (timeoutMs === undefined) return;
  const started = Date.now();
  const timer = setTimeout(() => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    due(Date.now() - started);
    proc.stop(KILL_AFTER_MS);
  }, timeoutMs);
  void proc.exited.finally(() => clearTimeout(timer));
}
