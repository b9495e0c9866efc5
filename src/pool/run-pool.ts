// The pool master's start: the listener bound once (or the one passed by
// the service manager, or inherited from an old master on USR2), its UNIX
// socket file removed at exit unless a successor now serves on it, then
// the pool (master.ts) started on it.
import type { Address } from "../net/address.ts";
import type { Options, PoolPolicy } from "../options.ts";
import { accessRules } from "../connection/sources.ts";
import { detachListener, listen, listeningMessage, passedListener } from "../net/listener.ts";
import { verbose } from "../system/log.ts";
import { atExit } from "../system/signals.ts";
import { WorkerPool } from "./master.ts";
import { fs } from "../system/builtins.ts";

export function runPool(
  argv: string[],
  options: Options,
  policy: PoolPolicy,
  address: Address,
  /** Gets the UNIX socket file socket created (not a passed one's). */
  afterBind: (socketFile: string | undefined, statusFile: string | undefined) => void,
  /** A USR2 successor: the old master's listener is fd 3, as a passed socket is (`address` is its). */
  inherited = false,
): WorkerPool {
  const passed = options.destination.kind === "passed";
  accessRules(options, address); // refused on a UNIX socket, before any worker starts
  // A passed socket is the service manager's: the master only keeps a copy, and never unlinks its path.
  let listenFd: number;
  let bound = address;
  let pool: WorkerPool | undefined;
  if (passed || inherited) {
    listenFd = passedListener();
  } else {
    const listening = listen<undefined>(address, { data() {} }, { mode: options.mode, deferAcceptSecs: options.deferAcceptSecs });
    listenFd = detachListener(listening);
    bound = listening.address;
  }
  const socketFile = bound.kind === "unix" && !passed ? bound.path : undefined;
  if (socketFile !== undefined) {
    atExit(() => {
      if (pool?.handedOver) return; // the successor serves on that path, and removes it at its end
      try {
        fs().unlinkSync(socketFile);
      } catch {
        // already gone
      }
    });
  }
  // Before afterBind: --status binds while still privileged, as the listener did.
  pool = new WorkerPool(listenFd, policy, options, argv, bound, inherited);
  afterBind(socketFile, options.status?.kind === "unix" ? options.status.path : undefined); // --status's file gets -u/-g too
  // After afterBind: once this line is out, the socket file has its -u/-g owner.
  verbose(options, listeningMessage(bound));
  pool.start();
  return pool;
}
