// The classic server (-s without -W): Bun's listener accepts; each
// connection is served by a gateway's handler (--scgi, --fastcgi) or by
// connection/serve.ts, one at a time, or all at once with -f. Without -l
// the first connection is the only one.
import { unlinkSync } from "node:fs";
import type { SocketHandler } from "bun";
import { adoptSocket, eventHandlers, type EventSocket, type SocketEvents } from "../connection/events.ts";
import { flushStdout } from "../connection/local.ts";
import { connectionMessage, serveSocket } from "../connection/serve.ts";
import { CLASSIC_MAX_CONNS, FastCgiHandler, stopKeptConnections } from "../gateway/fastcgi.ts";
import { ScgiHandler } from "../gateway/scgi.ts";
import { cgiSource } from "../gateway/cgi.ts";
import type { Address } from "../net/address.ts";
import type { Options } from "../options.ts";
import { fdOf, listen, listeningMessage, pauseListener, resumeListener, type Listening } from "../net/listener.ts";
import type { Program } from "../connection/program.ts";
import { accessRules, refusedPeer, rejectedLine, SourceLimit, sourceOf } from "../connection/sources.ts";
import { refusedLine } from "../net/rules.ts";
import { DescriptorGuard } from "./descriptors.ts";
import { atExit, exitNow } from "../system/signals.ts";
import { serving, stopping } from "../system/notify.ts";
import { say, verbose } from "../system/log.ts";
import { isReadable } from "../system/libc.ts";
import { descendantsGone, endDescendants, KILL_AFTER_MS } from "../system/reaper.ts";

/** --scgi, --fastcgi: a new handler per connection; undefined for a plain server. */
function gatewayFor(options: Options): (() => SocketEvents & { done: Promise<void> }) | undefined {
  if (options.gateway === undefined) return undefined;
  const source = cgiSource(options);
  if (options.gateway === "scgi") return () => new ScgiHandler(options, source);
  return () => new FastCgiHandler(options, source, CLASSIC_MAX_CONNS);
}

export function serve(
  options: Options,
  address: Address,
  program: Program | undefined,
  /** Gets the UNIX socket file socket created (not a passed one's). */
  afterBind: (socketFile: string | undefined) => void,
): { stop(): Promise<void> } {
  // Without a program every connection shares socket's own stdin and stdout,
  // so they take turns whatever -f says (a gateway always runs programs: -p or --cgi-root).
  const concurrent = options.loop && options.fork && (program !== undefined || options.gateway !== undefined);
  const waiting: EventSocket[] = [];
  /** What to do when a connection is over: release its source and its descriptors. */
  const finishers = new Map<EventSocket, () => void>();
  let busy = false;
  let listening: Listening<SocketEvents | undefined>;
  let pausedFd: number | undefined;
  const sources = options.maxPerSource === undefined ? undefined : new SourceLimit(options.maxPerSource);

  const finished = (socket: EventSocket): void => {
    const finish = finishers.get(socket);
    finishers.delete(socket);
    finish?.();
  };

  const next = (): void => {
    const socket = waiting.shift();
    if (!socket) return;
    busy = true;
    socket.resume();
    void run(socket).finally(() => {
      finished(socket);
      busy = false;
      if (options.loop) next();
      else void flushStdout().finally(() => exitNow(0));
    });
  };

  const gateway = gatewayFor(options);
  const rules = accessRules(options, address);
  const run = (socket: EventSocket): Promise<unknown> => {
    verbose(options, connectionMessage(listening.address, () => socket.remoteAddress));
    const served = serveOne(socket);
    const { slowMs } = options;
    if (slowMs === undefined) return served;
    // --slow: one line for a connection still running after SECS (the
    // method and URI are the pool's: here many requests share one process).
    const peer = listening.address.kind === "unix" ? listening.address.path : socket.remoteAddress;
    const timer = setTimeout(() => say(`slow: connection from ${peer} still running after ${slowMs / 1000} s`), slowMs);
    return served.finally(() => clearTimeout(timer));
  };
  const serveOne = (socket: EventSocket): Promise<unknown> => {
    try {
      if (gateway) {
        const handler = gateway();
        adoptSocket(socket, handler);
        return handler.done;
      }
      return serveSocket(socket, fdOf(socket), listening.address, options, program);
    } catch (e) {
      // The program could not be started: this connection fails, the server goes on.
      say((e as Error).message);
      socket.close();
      return Promise.resolve();
    }
  };

  const handlers: SocketHandler<SocketEvents | undefined> = {
    ...eventHandlers,
    open(socket) {
      // --allow/--deny: closed before anything reads a byte of it, and before it counts as the one connection of a server without -l.
      const refused = rules && refusedPeer(rules, fdOf(socket));
      if (refused) {
        verbose(options, refusedLine(refused));
        return void socket.close();
      }
      if (!options.loop) {
        if (waiting.length > 0 || busy) return void socket.close();
        // One connection only: later connects are refused, as by socket(1).
        listening.listener.stop();
      } else if (!admit(socket)) {
        return;
      }
      if (concurrent) {
        void run(socket).finally(() => finished(socket));
        return;
      }
      // Held unread until its turn: nothing may be read before a handoff.
      socket.pause();
      waiting.push(socket);
      if (!busy) next();
    },
    close(socket) {
      // Gone before its turn: Bun has closed the descriptor, whose number may be reused.
      const queued = waiting.indexOf(socket);
      if (queued >= 0) {
        waiting.splice(queued, 1);
        finished(socket);
      }
      socket.data?.onClose();
    },
  };

  // Out of descriptors: stop Bun's listener (keeping the socket), resume later.
  const guard = options.loop
    ? new DescriptorGuard(
        () => (pausedFd = pauseListener(listening)),
        () => {
          if (pausedFd === undefined) return;
          listening = { ...listening, listener: resumeListener(pausedFd, handlers) };
          pausedFd = undefined;
        },
        (line) => verbose(options, line),
      )
    : undefined;

  /** Counts the connection (source, descriptors); false if its source is over --max-per-source. */
  const admit = (socket: EventSocket): boolean => {
    const source = sources && sourceOf(fdOf(socket), listening.address);
    if (sources && source !== undefined) {
      if (!sources.admit(source)) {
        verbose(options, rejectedLine(listening.address, source, sources.max));
        socket.close();
        return false;
      }
    }
    guard?.opened();
    finishers.set(socket, () => {
      if (source !== undefined) sources?.release(source);
      guard?.closed();
    });
    return true;
  };

  const passed = options.destination.kind === "passed";
  listening = listen<SocketEvents | undefined>(address, handlers, { mode: options.mode, deferAcceptSecs: options.deferAcceptSecs, passed });
  // A passed socket's path belongs to the service manager (and stop() of an adopted listener leaves it).
  if (address.kind === "unix") {
    const path = listening.address.kind === "unix" ? listening.address.path : address.path;
    atExit(() => {
      listening.listener.stop();
      if (pausedFd === undefined || passed) return;
      try {
        unlinkSync(path); // a paused listener's path is ours to remove
      } catch {
        // already gone
      }
    });
  }
  afterBind(address.kind === "unix" && !passed && listening.address.kind === "unix" ? listening.address.path : undefined);
  // After afterBind: once this line is out, the socket file has its -u/-g owner.
  verbose(options, listeningMessage(listening.address));
  serving();
  return {
    /**
     * TERM/INT: within --grace, the connections the kernel has already
     * accepted are taken from its queue and served, with those waiting
     * their turn; then programs still running get TERM, then KILL.
     */
    async stop() {
      stopping();
      stopKeptConnections();
      const end = Date.now() + options.graceMs;
      // Bun's loop accepts while we wait; closing the listener earlier would reset the queue.
      if (pausedFd === undefined) while (Date.now() < end && isReadable(fdOf(listening.listener))) await Bun.sleep(10);
      listening.listener.stop();
      while (Date.now() < end && (busy || waiting.length > 0 || finishers.size > 0)) await Bun.sleep(20);
      await descendantsGone(end - Date.now());
      const cut = await endDescendants();
      if (cut > 0) verbose(options, `${cut} process${cut === 1 ? "" : "es"} cut short (TERM, then KILL after ${KILL_AFTER_MS / 1000} s)`);
    },
  };
}
