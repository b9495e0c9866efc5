// The command line's program, loaded by entry.ts for everything but
// -version and a pool worker: parse, resolve, detach (-b), then run as
// client, classic server or pool master. Every expected failure is a
// Fatal: one line on stderr and socket(1)'s exit status (system/failure.ts).
import { programFor } from "./connection/program.ts";
import { resolveDestination, resolveHostAll } from "./net/address.ts";
import { socketsPassed, takeSuccession } from "./net/activation.ts";
import type { WorkerPool } from "./pool/master.ts";
import { takeWorkerConfig } from "./pool/protocol.ts";
import type { serve } from "./server/classic.ts";
import { daemonize, isDaemon, openPidFile, setLogFile, setPidFile, settleDaemon } from "./system/daemon.ts";
import { fail, survive } from "./system/failure.ts";
import { write } from "./system/log.ts";
import { output } from "./system/output.ts";
import { becomeSuccessor, takeNotifySocket } from "./system/notify.ts";
import { becomeIdentity, giveSocketFile, resolveIdentity } from "./system/privileges.ts";
import { installReaper } from "./system/reaper.ts";
import { imageCommand } from "./system/self.ts";
import { exitNow, handleSignals } from "./system/signals.ts";
import { withoutLazyThreads } from "./system/threads.ts";

async function main(argv: string[]): Promise<void> {
  // Taken out of every socket's environment: programs must not see it, and a master's workers must not inherit stale parts.
  takeWorkerConfig(process.env);
  // USR2: started by an old pool master, on its listener, with its command line.
  const successor = takeSuccession();
  const { parseCommandLine, unreadableWord } = await import("./cli/parse.ts");
  const parsed = unreadableWord(argv) ?? parseCommandLine(argv, socketsPassed());
  if ("exit" in parsed) {
    if (parsed.help) await output(await (await import("./cli/help.ts")).helpText());
    if (parsed.stdout) await output(parsed.stdout);
    if (parsed.stderr) write(parsed.stderr);
    return exitNow(parsed.exit);
  }
  const { run: options, warning } = parsed;
  if (warning) write(warning);
  // A pool's master must not abort under a process limit (threads.ts); -b's caller leaves that to its daemon.
  if (options.pool && (!options.background || isDaemon() || successor)) withoutLazyThreads(argv, options.user !== undefined || options.group !== undefined);

  // Names are resolved before detaching, so a typo is reported where it was typed.
  // A successor serves the listener it was given, as it is (port 0 already chosen).
  const address = await resolveDestination(successor ? { kind: "passed" } : options.destination, options.server);
  // --status HOST:PORT as -B's name: its address, or "unknown host" (Bun's listen said "Failed to listen", or a stale errno's text).
  if (options.status?.kind === "inet") options.status = { ...options.status, host: (await resolveHostAll(options.status.host))[0]!.ip };
  const identity = resolveIdentity(options.user, options.group);
  setPidFile(options.pidFile); // absolute, before the daemon changes directory
  setLogFile(options.log);
  // A successor of a -b daemon is one already (its stdout and stderr are the log).
  if (options.background && !isDaemon() && !successor) daemonize([...imageCommand(), ...argv], options.log);
  if (isDaemon() || (successor && options.background)) settleDaemon();
  takeNotifySocket();
  if (successor) becomeSuccessor();
  // Orphans of programs come to us (as PID 1 they would anyway): reap them.
  if (options.server) installReaper();
  // Right after the bind: the socket file is given away and the pid file
  // opened while still privileged, then -u/-g apply.
  const afterBind = (socketFile: string | undefined, statusFile?: string) => {
    // A successor already runs as -u/-g, on a socket file already given; the old master's pid stays until it serves.
    if (successor) return openPidFile(true);
    if (socketFile !== undefined) giveSocketFile(socketFile, identity);
    if (statusFile !== undefined) giveSocketFile(statusFile, identity);
    openPidFile();
    becomeIdentity(identity);
  };

  if (options.server && options.pool && (options.program !== undefined || options.cgiRoot !== undefined)) {
    survive(false);
    // Handlers first: a signal right after the bind must still unlink the path.
    let pool: WorkerPool | undefined;
    handleSignals(async () => pool?.stop(), true, {
      SIGHUP: () => pool?.reload(),
      SIGUSR1: () => pool?.reopenLog(),
      SIGUSR2: () => pool?.upgrade(),
      SIGTTIN: () => pool?.resize(1),
      SIGTTOU: () => pool?.resize(-1),
    });
    const { runPool } = await import("./pool/run-pool.ts");
    pool = runPool(argv, options, options.pool, address, afterBind, successor);
    return;
  }
  // Resolved after -b changed directory, as sh would resolve it there.
  const program = options.program === undefined ? undefined : programFor(options.program);
  if (!options.server) {
    handleSignals();
    const { runClient } = await import("./client/client.ts");
    return void (await runClient(options, address, program));
  }
  survive(false);
  let server: ReturnType<typeof serve> | undefined;
  handleSignals(async () => server?.stop());
  server = (await import("./server/classic.ts")).serve(options, address, program, afterBind);
}

main(Bun.argv.slice(2)).catch(fail);
