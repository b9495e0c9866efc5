// USR2's succession: the executable at socket's path (an operator may have
// put a new one there) starts with the same command line as a successor
// master, on this master's listener (its fd 3). Once its workers wait it
// says so (Bun's IPC), and the old master hands over: drains and exits. A
// successor that cannot start, exits or never serves leaves the old one
// serving.
import type { Subprocess } from "bun";
import { errorNumber, errorText } from "../fatal.ts";
import { SUCCESSOR_ENV } from "../net/activation.ts";
import { PID_FD_ENV, pidFileDescriptor, SUCCESSOR_PID_FD } from "../system/daemon.ts";
import { strerror } from "../system/ffi.ts";
import { say } from "../system/log.ts";
import { notifyEnv } from "../system/notify.ts";
import { spawn } from "../system/reaper.ts";
import { selfCommand, startDir } from "../system/self.ts";
import { NO_LAZY_THREADS } from "../system/threads.ts";

/** How long a USR2 successor may take to serve before it is given up (TERM) and the old master serves on. */
const SUCCESSOR_TIMEOUT_MS = 30_000;

export class Succession {
  /** USR2's new master, until it serves (then this one hands over) or fails. */
  private successor: Subprocess | undefined;

  constructor(
    private readonly listenFd: number,
    /** The command line this master was started with: the successor's too. */
    private readonly argv: string[],
    /** The master stops: a successor that ends meanwhile is no news. */
    private readonly stopping: () => boolean,
    /** The successor serves: the master hands over to it. */
    private readonly serves: (successor: Subprocess) => void,
  ) {}

  /** USR2: starts a successor, unless one is still starting. */
  start(): void {
    if (this.successor) {
      say(`USR2: the new master ${this.successor.pid} is still starting; ignored`);
      return;
    }
    // A PID 1 that exits ends every process of its namespace, the new master included.
    if (process.pid === 1) return say("USR2: as PID 1 this master cannot hand over (its exit would end the container); HUP replaces the workers");
    const command = selfCommand();
    const pidFd = pidFileDescriptor();
    let proc: Subprocess;
    try {
      proc = spawn([...command, ...this.argv], {
        cwd: startDir,
        // Index = the successor's descriptor: the listener 3, the pid file SUCCESSOR_PID_FD (4).
        stdio: ["ignore", "inherit", "inherit", this.listenFd, ...(pidFd === undefined ? [] : [pidFd])],
        env: {
          ...process.env,
          ...NO_LAZY_THREADS,
          ...notifyEnv(),
          [SUCCESSOR_ENV]: String(process.pid),
          ...(pidFd === undefined ? {} : { [PID_FD_ENV]: String(SUCCESSOR_PID_FD) }),
        },
        serialization: "json",
        ipc: (message: unknown) => {
          if (message === "ready" && this.successor === proc) this.serves(proc);
        },
        onExit: (_p, code, signal) => {
          if (this.successor !== proc || this.stopping()) return;
          this.successor = undefined;
          say(`USR2: the new master ${proc.pid} ${signal ? `was killed by ${signal}` : `exited with status ${code}`} before it served; this master (${process.pid}) serves on`);
        },
      });
    } catch (e) {
      const errno = errorNumber(e);
      const why = errno === undefined ? errorText(e) : strerror(Math.abs(errno));
      say(`USR2: cannot start ${command[0]}: ${why}; this master (${process.pid}) serves on`);
      return;
    }
    this.successor = proc;
    say(`USR2: started ${command[0]} as the new master ${proc.pid}`);
    setTimeout(() => this.timeOut(proc), SUCCESSOR_TIMEOUT_MS).unref();
  }

  private timeOut(proc: Subprocess): void {
    if (this.successor !== proc || this.stopping()) return;
    say(`USR2: the new master ${proc.pid} did not serve within ${SUCCESSOR_TIMEOUT_MS / 1000} s; ending it, this master serves on`);
    proc.kill("SIGTERM");
  }

  /** The master stops: a successor that serves stays (it is now the master); one still starting is ended. */
  end(handedOver: boolean): void {
    if (handedOver) this.successor = undefined;
    this.successor?.kill("SIGTERM"); // an upgrade under way is abandoned
  }
}
