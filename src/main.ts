// Entry point: a pool worker, or the command line: parse, resolve, detach
// (-b), then run as client, classic server or pool master. Every expected
// failure is a Fatal: one line on stderr and socket(1)'s exit status.
import { programFor } from "./connection/program.ts";
import { errorText, Fatal } from "./fatal.ts";
import { NAME } from "./version.ts";
import { resolveDestination } from "./net/address.ts";
import { socketsPassed, takeSuccession } from "./net/activation.ts";
import type { WorkerPool } from "./pool/master.ts";
import { takeWorkerConfig, WORKER_FLAG } from "./pool/protocol.ts";
import type { serve } from "./server/classic.ts";
import { daemonize, isDaemon, openPidFile, reportFatal, setLogFile, setPidFile, settleDaemon } from "./system/daemon.ts";
import { write } from "./system/log.ts";
import { becomeSuccessor, takeNotifySocket } from "./system/notify.ts";
import { becomeIdentity, giveSocketFile, resolveIdentity } from "./system/privileges.ts";
import { installReaper } from "./system/reaper.ts";
import { selfCommand } from "./system/self.ts";
import { exitNow, handleSignals } from "./system/signals.ts";
import { NO_LAZY_THREADS, withoutLazyThreads } from "./system/threads.ts";

function describe(e: unknown): string {
  return `${NAME}: internal error: ${errorText(e)}\n`;
}

/**
 * A server must outlive any one connection's trouble: an error that escaped
 * a connection's handling is reported in one line and the server goes on.
 * A worker instead exits (its master replaces it), as its state is suspect.
 */
function survive(worker: boolean): void {
  const report = (e: unknown) => {
    write(describe(e));
    if (process.env.SOCKET_DEBUG) console.error(e);
    if (worker) process.exit(1);
  };
  process.on("uncaughtException", report);
  process.on("unhandledRejection", report);
}

function fail(e: unknown): never {
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

async function main(argv: string[]): Promise<void> {
  // Taken out of every socket's environment: programs must not see it, and a master's workers must not inherit stale parts.
  const workerConfig = takeWorkerConfig(process.env);
  if (argv[0] === WORKER_FLAG && workerConfig) {
    for (const name of Object.keys(NO_LAZY_THREADS)) delete process.env[name];
    survive(true);
    const { startWorker } = await import("./pool/worker.ts");
    return void (await startWorker(workerConfig));
  }
  // USR2: started by an old pool master, on its listener, with its command line.
  const successor = takeSuccession();
  const { parseCommandLine } = await import("./cli/parse.ts");
  const parsed = parseCommandLine(argv, socketsPassed());
  if ("exit" in parsed) {
    if (parsed.help) process.stdout.write(await (await import("./cli/help.ts")).helpText());
    if (parsed.stdout) process.stdout.write(parsed.stdout);
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
  const identity = resolveIdentity(options.user, options.group);
  setPidFile(options.pidFile); // absolute, before the daemon changes directory
  setLogFile(options.log);
  // A successor of a -b daemon is one already (its stdout and stderr are the log).
  if (options.background && !isDaemon() && !successor) daemonize([...selfCommand(), ...argv], options.log);
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
