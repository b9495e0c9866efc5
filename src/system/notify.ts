// Readiness (sd_notify(3)'s protocol, without libsystemd): with
// NOTIFY_SOCKET set, one datagram "READY=1" once socket serves (listener
// bound and, for a pool, the first workers waiting in accept), and
// "STOPPING=1" when it starts draining. Serving is also when -b releases
// its caller and when the --pid-file is written: one moment, one function.
import { Fatal } from "../fatal.ts";
import { reportFatal, reportReady, writePidFile } from "./daemon.ts";
import { sendDatagram } from "./connect.ts";
import { exitNow } from "./signals.ts";
import { say, write } from "./log.ts";

import { errorText } from "../fatal.ts";

let notifySocket: string | undefined;

/** Takes NOTIFY_SOCKET out of the environment: workers and programs must not notify in socket's name. */
export function takeNotifySocket(): void {
  notifySocket = process.env.NOTIFY_SOCKET || undefined;
  delete process.env.NOTIFY_SOCKET;
}

function notify(state: string): void {
  if (!notifySocket) return;
  try {
    sendDatagram(notifySocket, state);
  } catch (e) {
    // The service manager will time us out; say why, but go on serving.
    say(`NOTIFY_SOCKET ${notifySocket}: ${errorText(e)}`);
  }
}

let served = false;
/** A USR2 successor: it names itself the main process, and tells its old master (its parent, over Bun's IPC) that it serves. */
let successor = false;

export function becomeSuccessor(): void {
  successor = true;
}

/** What a USR2 successor needs to notify in socket's name (takeNotifySocket took it from this process's environment). */
export function notifyEnv(): Record<string, string> {
  return notifySocket ? { NOTIFY_SOCKET: notifySocket } : {};
}

/** The old master, still the main process (NotifyAccess=main), names its successor: systemd follows it. */
export function mainPid(pid: number): void {
  notify(`MAINPID=${pid}`);
}

/** socket serves: pid file, READY=1, and -b's caller released (in that order: the caller may read the pid file at once). */
export function serving(): void {
  if (served) return;
  served = true;
  try {
    writePidFile();
  } catch (e) {
    const fatal = e instanceof Fatal ? e : new Fatal(`--pid-file: ${errorText(e)}`, 1);
    write(fatal.text);
    reportFatal(fatal.text, fatal.status);
    exitNow(fatal.status);
  }
  notify(successor ? `MAINPID=${process.pid}\nREADY=1` : "READY=1");
  reportReady();
  if (successor) {
    try {
      process.send?.("ready");
    } catch {
      // the old master is gone: nobody is left to hand over
    }
  }
}

/** socket starts draining (TERM or INT). */
export function stopping(): void {
  notify("STOPPING=1");
}
