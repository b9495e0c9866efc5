// The classic server (-s without -W): Bun's listener accepts; each
// connection is served by a gateway's handler (--scgi, --fastcgi) or by
// connection/serve.ts, one at a time, or all at once with -f. Without -l
// the first connection is the only one.
import type { SocketHandler } from "bun";
import { adoptSocket, eventHandlers, type EventSocket, type SocketEvents } from "../connection/events.ts";
import { flushStdout } from "../connection/local.ts";
import { connectionMessage, serveSocket } from "../connection/serve.ts";
import { CLASSIC_MAX_CONNS, FastCgiHandler, stopKeptConnections } from "../gateway/fastcgi-evented.ts";
import { limitBodiesOnDisk } from "../gateway/body-spool.ts";
import { ScgiHandler } from "../gateway/scgi-evented.ts";
import { cgiSource } from "../request/site.ts";
import type { Address } from "../net/address.ts";
import type { Options } from "../options.ts";
import { fdOf, listen, listeningMessage, pauseListener, resumeListener, type Listening } from "../net/listener.ts";
import type { Program } from "../connection/program.ts";
import { accessRules, peerIp, refusedPeer, rejectedLine, SourceLimit, sourceOf } from "../connection/sources.ts";
import { refusedLine, type AccessRules } from "../net/rules.ts";
import { DescriptorGuard } from "./descriptors.ts";
import { atExit, exitNow } from "../system/signals.ts";
import { serving, stopping } from "../system/notify.ts";
import { say, verbose } from "../system/log.ts";
import { isReadable } from "../system/poll.ts";
import { descendantsGone, endDescendants, KILL_AFTER_MS } from "../system/reaper.ts";
import { plainOverdue } from "../request/request-deadline.ts";
import { fs } from "../system/builtins.ts";

type Gateway = () => SocketEvents & { done: Promise<void> };

/** --scgi, --fastcgi: a new handler per connection; undefined for a plain server. */
function gatewayFor(options: Options): Gateway | undefined {
  if (options.gateway === undefined) return undefined;
  const source = cgiSource(options);
  limitBodiesOnDisk(options.maxBody); // every connection at once could hold --max-body
  if (options.gateway === "scgi") return () => new ScgiHandler(options, source);
  return () => new FastCgiHandler(options, source, CLASSIC_MAX_CONNS);
}

/** Listens on `address` and serves; `afterBind` gets the UNIX socket file socket created (not a passed one's). */
export function serve(options: Options, address: Address, program: Program | undefined, afterBind: (socketFile: string | undefined) => void): { stop(): Promise<void> } {
  const server = new ClassicServer(options, address, program);
  server.listen(afterBind);
  return server;
}

class ClassicServer {
  /** Without a program every connection shares socket's own stdin and stdout, so they take turns whatever -f says. */
  private readonly concurrent: boolean;
  /** Connections held unread until their turn. */
  private readonly waiting: EventSocket[] = [];
  /** What to do when a connection is over: release its source and its descriptors. */
  private readonly finishers = new Map<EventSocket, () => void>();
  private busy = false;
  private listening!: Listening<SocketEvents | undefined>;
  /** The listener's descriptor while it is paused for want of descriptors. */
  private pausedFd: number | undefined;
  private readonly sources: SourceLimit | undefined;
  private readonly gateway: Gateway | undefined;
  private readonly rules: AccessRules | undefined;
  private readonly guard: DescriptorGuard | undefined;

  constructor(
    private readonly options: Options,
    private readonly address: Address,
    private readonly program: Program | undefined,
  ) {
    // A gateway always runs programs (-p or --cgi-root).
    this.concurrent = options.loop && options.fork && (program !== undefined || options.gateway !== undefined);
    this.sources = options.maxPerSource === undefined ? undefined : new SourceLimit(options.maxPerSource);
    this.gateway = gatewayFor(options);
    this.rules = accessRules(options, address);
    // Out of descriptors: stop Bun's listener (keeping the socket), resume later.
    this.guard = options.loop ? new DescriptorGuard(() => this.pause(), () => this.resume(), (line) => verbose(options, line)) : undefined;
  }

  private readonly handlers: SocketHandler<SocketEvents | undefined> = {
    ...eventHandlers,
    open: (socket) => this.open(socket),
    close: (socket) => {
      // Gone before its turn: Bun has closed the descriptor, whose number may be reused.
      const queued = this.waiting.indexOf(socket);
      if (queued >= 0) {
        this.waiting.splice(queued, 1);
        this.finished(socket);
      }
      socket.data?.onClose();
    },
  };

  listen(afterBind: (socketFile: string | undefined) => void): void {
    const { options, address } = this;
    const passed = options.destination.kind === "passed";
    this.listening = listen<SocketEvents | undefined>(address, this.handlers, { mode: options.mode, deferAcceptSecs: options.deferAcceptSecs, passed });
    const bound = this.listening.address;
    // A passed socket's path belongs to the service manager (and stop() of an adopted listener leaves it).
    if (address.kind === "unix") {
      const path = bound.kind === "unix" ? bound.path : address.path;
      atExit(() => {
        this.listening.listener.stop();
        if (this.pausedFd === undefined || passed) return;
        try {
          fs().unlinkSync(path); // a paused listener's path is ours to remove
        } catch {
          // already gone
        }
      });
    }
    afterBind(address.kind === "unix" && !passed && bound.kind === "unix" ? bound.path : undefined);
    // After afterBind: once this line is out, the socket file has its -u/-g owner.
    verbose(options, listeningMessage(bound));
    serving();
  }

  private open(socket: EventSocket): void {
    const { options } = this;
    // --allow/--deny: closed before anything reads a byte of it, and before it counts as the one connection of a server without -l.
    const refused = this.rules && refusedPeer(this.rules, fdOf(socket));
    if (refused) {
      verbose(options, refusedLine(refused));
      return void socket.close();
    }
    if (!options.loop) {
      if (this.waiting.length > 0 || this.busy) return void socket.close();
      // One connection only: later connects are refused, as by socket(1).
      this.listening.listener.stop();
    } else if (!this.admit(socket)) {
      return;
    }
    if (this.concurrent) {
      void this.run(socket).finally(() => this.finished(socket));
      return;
    }
    // Held unread until its turn: nothing may be read before a handoff.
    socket.pause();
    this.waiting.push(socket);
    if (!this.busy) this.next();
  }

  /** Counts the connection (source, descriptors); false if its source is over --max-per-source. */
  private admit(socket: EventSocket): boolean {
    const { sources, guard } = this;
    const source = sources && sourceOf(fdOf(socket), this.listening.address);
    if (sources && source !== undefined && !sources.admit(source)) {
      verbose(this.options, rejectedLine(this.listening.address, source, sources.max));
      socket.close();
      return false;
    }
    guard?.opened();
    this.finishers.set(socket, () => {
      if (source !== undefined) sources?.release(source);
      guard?.closed();
    });
    return true;
  }

  private finished(socket: EventSocket): void {
    const finish = this.finishers.get(socket);
    this.finishers.delete(socket);
    finish?.();
  }

  /** The next connection waiting its turn; without -l the server ends after it. */
  private next(): void {
    const socket = this.waiting.shift();
    if (!socket) return;
    this.busy = true;
    socket.resume();
    void this.run(socket).finally(() => {
      this.finished(socket);
      this.busy = false;
      if (this.options.loop) this.next();
      else void flushStdout().finally(() => exitNow(0));
    });
  }

  private run(socket: EventSocket): Promise<unknown> {
    const { options } = this;
    const bound = this.listening.address;
    verbose(options, connectionMessage(bound, () => peerIp(fdOf(socket))));
    const { slowMs } = options;
    // Before the program takes the connection (its address is gone with it).
    const peer = slowMs === undefined ? "" : bound.kind === "unix" ? bound.path : peerIp(fdOf(socket));
    const served = this.serveOne(socket);
    if (slowMs === undefined) return served;
    // --slow: one line for a connection still running after SECS (the
    // method and URI are the pool's: here many requests share one process).
    const timer = setTimeout(() => say(`slow: connection from ${peer} still running after ${slowMs / 1000} s`), slowMs);
    return served.finally(() => clearTimeout(timer));
  }

  private serveOne(socket: EventSocket): Promise<unknown> {
    try {
      if (this.gateway) {
        const handler = this.gateway();
        adoptSocket(socket, handler);
        return handler.done;
      }
      return serveSocket(socket, fdOf(socket), this.listening.address, this.options, this.program, plainOverdue);
    } catch (e) {
      // The program could not be started: this connection fails, the server goes on.
      say(e instanceof Error ? e.message : String(e));
      socket.close();
      return Promise.resolve();
    }
  }

  private pause(): void {
    this.pausedFd = pauseListener(this.listening);
  }

  private resume(): void {
    if (this.pausedFd === undefined) return;
    this.listening = { ...this.listening, listener: resumeListener(this.pausedFd, this.handlers) };
    this.pausedFd = undefined;
  }

  /**
   * TERM/INT: within --grace, the connections the kernel has already
   * accepted are taken from its queue and served, with those waiting
   * their turn; then programs still running get TERM, then KILL.
   */
  async stop(): Promise<void> {
    stopping();
    stopKeptConnections();
    const end = Date.now() + this.options.graceMs;
    // Bun's loop accepts while we wait; closing the listener earlier would reset the queue.
    if (this.pausedFd === undefined) while (Date.now() < end && isReadable(fdOf(this.listening.listener))) await Bun.sleep(10);
    this.listening.listener.stop();
    while (Date.now() < end && (this.busy || this.waiting.length > 0 || this.finishers.size > 0)) await Bun.sleep(20);
    await descendantsGone(end - Date.now());
    const cut = await endDescendants();
    if (cut > 0) verbose(this.options, `${cut} process${cut === 1 ? "" : "es"} cut short (TERM, then KILL after ${KILL_AFTER_MS / 1000} s)`);
  }
}
