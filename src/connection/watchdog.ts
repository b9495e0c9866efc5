// --timeout for a TCP connection handed to its program (no copy loop): the
// kernel records when data last moved each way (TCP_INFO's last_data_sent
// and last_data_recv), so a copy of the descriptor kept while the program
// runs is enough to see an idle connection, without touching a byte.
// UNIX sockets have no such record: they keep the copy loop for --timeout.
import { close, dupCloexec } from "../system/fd.ts";
import { SHUT_RDWR, shutdown, tcpIdle } from "../system/socket.ts";
import { KILL_AFTER_MS } from "../system/reaper.ts";
import type { Process } from "./process.ts";

/** Never look more often than this (a short --timeout must not become a busy timer). */
const MIN_TICK_MS = 50;

/**
 * Watches `fd` (the program's connection, before socket lets go of it)
 * until the program exits. When nothing has moved either way for
 * `timeoutMs`, shuts the connection down (the peer sees it closed at once,
 * whoever else holds it) and ends the program: TERM, then KILL.
 */
export function watchIdle(fd: number, proc: Process, timeoutMs: number, log: (line: string) => void): void {
  let copy: number;
  try {
    copy = dupCloexec(fd);
  } catch {
    return; // no descriptor left for the watch: the connection is served unwatched
  }
  let timer: Timer | undefined;
  const check = (): void => {
    let idleMs: number;
    try {
      const { sentMs, receivedMs } = tcpIdle(copy);
      idleMs = Math.min(sentMs, receivedMs);
    } catch {
      return; // not TCP after all, or gone: nothing to watch
    }
    if (idleMs < timeoutMs) {
      timer = setTimeout(check, Math.max(timeoutMs - idleMs, MIN_TICK_MS));
      return;
    }
    log("connection timed out");
    shutdown(copy, SHUT_RDWR);
    proc.stop(KILL_AFTER_MS);
  };
  timer = setTimeout(check, timeoutMs);
  void proc.exited.finally(() => {
    clearTimeout(timer);
    close(copy);
  });
}
