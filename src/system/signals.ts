// socket(1)'s signal behaviour: default-fatal signals end it with a newline
// and "<Name> occured, exiting" (sic, the original's spelling) and status
// 256 - signo; USR1 ends it silently; TSTP, CONT, CHLD, WINCH and QUIT are
// left to their defaults. Cleanups (unlinking a UNIX socket) run first.
import { write } from "./log.ts";
import { os } from "./builtins.ts";

const NAMES: Record<string, string> = {
  SIGHUP: "Hangup signal",
  SIGINT: "Interrupt",
  SIGPIPE: "Broken pipe condition",
  SIGALRM: "Alarm clock",
  SIGTERM: "Termination signal",
  SIGUSR1: "",
  SIGUSR2: "User defined signal 2",
  SIGVTALRM: "Virtual timer expired",
  SIGPROF: "Profiling timer expired",
  SIGXCPU: "CPU time limit exceeded",
  SIGXFSZ: "File size limit exceeded",
  SIGIO: "I/O possible",
  SIGPWR: "Power failure",
};

const cleanups: (() => void)[] = [];

/** Runs before any exit through a signal or exitNow (e.g. unlink the socket path). */
export function atExit(cleanup: () => void): void {
  cleanups.push(cleanup);
}

export function exitNow(status: number): never {
  for (const cleanup of cleanups.splice(0).reverse()) {
    try {
      cleanup();
    } catch {
      // best effort: the process is ending anyway
    }
  }
  process.exit(status);
}

/**
 * One turn of Bun's event loop. Code that blocks the JavaScript thread in a
 * system call (a worker's epoll_wait, the splice bridge) awaits this after
 * EINTR or between connections: Bun runs signal handlers, delivers messages
 * and reaps children only from its loop.
 */
export const nextTick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export function signalNumber(name: string): number {
  return os().constants.signals[name as NodeJS.Signals];
}

/**
 * Installs the handlers. `graceful`, when given, is awaited before exiting
 * on TERM and INT, or with `always` on every signal that ends socket: a
 * pool master that exits at once leaves its programs running on with
 * parent 1, holding their clients' connections. `own`: signals that do
 * something else than end socket (a pool's HUP, USR1, USR2, TTIN, TTOU).
 */
export function handleSignals(graceful?: () => Promise<void>, always = false, own: Partial<Record<NodeJS.Signals, () => void>> = {}): void {
  let ending = false;
  for (const [name, handler] of Object.entries(own)) {
    process.on(name as NodeJS.Signals, () => {
      if (!ending) handler();
    });
  }
  for (const [name, text] of Object.entries(NAMES)) {
    const signo = signalNumber(name);
    if (signo === undefined || name in own) continue;
    try {
      process.on(name as NodeJS.Signals, () => {
        if (ending) return;
        ending = true;
        if (text) write(`\n${text} occured, exiting\n`);
        const drain = graceful && (always || name === "SIGTERM" || name === "SIGINT") ? graceful() : Promise.resolve();
        void drain.finally(() => exitNow(256 - signo));
      });
    } catch {
      // a signal this runtime will not let us catch keeps its default
    }
  }
}
