// How each of socket's programs (the command line, a pool worker) ends on
// an error that reached its top: every expected failure is a Fatal, one
// line on stderr and socket(1)'s exit status; anything else is a bug,
// still one line, its stack only on request (SOCKET_DEBUG).
import { errorText, Fatal } from "../fatal.ts";
import { NAME } from "../version.ts";
import { reportFatal } from "./daemon.ts";
import { write } from "./log.ts";
import { exitNow } from "./signals.ts";

function describe(e: unknown): string {
  return `${NAME}: internal error: ${errorText(e)}\n`;
}

/**
 * A server must outlive any one connection's trouble: an error that escaped
 * a connection's handling is reported in one line and the server goes on.
 * A worker instead exits (its master replaces it), as its state is suspect.
 */
export function survive(worker: boolean): void {
  const report = (e: unknown) => {
    write(describe(e));
    if (process.env.SOCKET_DEBUG) console.error(e);
    if (worker) process.exit(1);
  };
  process.on("uncaughtException", report);
  process.on("unhandledRejection", report);
}

export function fail(e: unknown): never {
  if (e instanceof Fatal) {
    write(e.text);
    reportFatal(e.text, e.status); // -b: the caller says it too, and exits with it
    return exitNow(e.status);
  }
  // A bug, not bad input: still one line, and the stack only on request.
  write(describe(e));
  reportFatal(describe(e), 70);
  if (process.env.SOCKET_DEBUG) console.error(e);
  return exitNow(70 /* EX_SOFTWARE */);
}
