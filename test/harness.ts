// Test support: run the compiled dist/socket for real, talk to it over real
// sockets on 127.0.0.1 and in temporary directories, and leave nothing
// behind (every handle is AsyncDisposable: use `await using`).
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FileSink, Subprocess } from "bun";

export const SOCKET = join(import.meta.dir, "..", "dist", "socket");

export type Target = number | string; // a TCP port on 127.0.0.1, or a UNIX path

/** A temporary directory, removed at the end of the scope. */
export function tempDir(): { path: string } & Disposable {
  const path = mkdtempSync(join(tmpdir(), "socket-test-"));
  return { path, [Symbol.dispose]: () => rmSync(path, { recursive: true, force: true }) };
}

/** The process's state letter from /proc (R, S, Z, ...); undefined once it is gone. */
export function processState(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/status`, "utf8").match(/^State:\s+(\S)/m)?.[1];
  } catch {
    return undefined;
  }
}

/** Alive and not a zombie (kill -0 succeeds on a zombie). */
export function isAlive(pid: number): boolean {
  const state = processState(pid);
  return state !== undefined && state !== "Z" && state !== "X";
}

/** The children of a process, zombies included, each with its state letter. */
export function children(pid: number): { pid: number; state: string }[] {
  const out: { pid: number; state: string }[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(ppid) === pid) out.push({ pid: Number(entry), state });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Live children of a process. */
export const childrenOf = (pid: number): number[] => children(pid).filter((c) => c.state !== "Z").map((c) => c.pid);

/** Zombie children of `pid`: what a missing reaper leaves behind. */
export const zombiesOf = (pid: number): number => children(pid).filter((c) => c.state === "Z").length;

/** A process's command line, its words joined by NULs; "" once it has ended (a /proc read may race its exit). */
export function cmdline(pid: number | string): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return "";
  }
}

/** Processes whose command line contains `text` (pgrep -f, without its option parsing). */
export const pidsByCommandLine = (text: string): number[] =>
  readdirSync("/proc").filter((e) => /^\d+$/.test(e) && Number(e) !== process.pid && cmdline(e).replaceAll("\0", " ").includes(text)).map(Number);

/** Sends `signal` to each of `pids`, those already gone (a master's workers leave with it) skipped. */
export function signalEach(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone already
    }
  }
}

/** A pool master's live workers (its children running in worker mode). */
export const workersOf = (master: number): number[] => childrenOf(master).filter((pid) => cmdline(pid).includes("--pool-worker"));

export function descendantsOf(pid: number): number[] {
  const direct = childrenOf(pid);
  return [...direct, ...direct.flatMap(descendantsOf)];
}

/** Polls until `check` holds (every `every` ms), or fails the test after `ms`. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, ms = 5000, every = 20): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(every);
  }
}

/** A stream's text as it comes, so tests can wait for a line; `done` settles at the stream's end. */
export interface Output {
  text(): string;
  done: Promise<string>;
}

/** Collects a stream (a process's stdout or stderr: socket's, or a peer's such as socat or nginx). */
export function collect(stream: ReadableStream<Uint8Array> | undefined): Output {
  let text = "";
  const drain = async () => {
    if (!stream) return text;
    const decoder = new TextDecoder();
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
    return text;
  };
  return { text: () => text, done: drain().catch(() => text) };
}

/** How to start dist/socket: the one place that spawns it (run, launch and startServer all come here). */
export interface Launch {
  /** "pipe": the test writes `stdin`; text or bytes: given, then EOF; default: none. */
  stdin?: "pipe" | string | Uint8Array;
  env?: Record<string, string>;
  /** A command that runs socket, given socket's command line after its own (setpriv, unshare, sh -c '... exec "$@"' sh). */
  wrap?: string[];
  cwd?: string;
  /** Socket's stderr appended to this file rather than a pipe (a full disk under the log); stderr() reads it back. */
  stderrFile?: string;
  /**
   * Another build or copy than dist/socket: a release's arm64 executable, a
   * .deb's usr/bin/socket, a copy a USR2 upgrade replaces at its path.
   */
  executable?: string;
  /** How long startServer waits for the listening line (default 5 s; an emulated start takes longer). */
  startMs?: number;
}

/** A started dist/socket; disposing it ends it and every process it started. */
export interface Running extends AsyncDisposable {
  proc: Subprocess<"pipe" | "ignore" | Blob, "pipe", "pipe" | number>;
  /** Set when started with stdin "pipe". */
  stdin: FileSink | undefined;
  stderr: () => string;
  stdout: () => string;
  /** The exit status, once socket has ended and its stdout and stderr are at their end. */
  exited(): Promise<number>;
  /** Ends the process and every process it started. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `dist/socket ARGS` (no -v added) and returns at once: for tests that expect it to fail or to go away (-b). */
export function launch(args: string[], opts: Launch = {}): Running {
  // Its own process group: kill() reaches what the tree walk cannot, such as
  // a prestarted program left behind when its worker died.
  const errFd = opts.stderrFile === undefined ? undefined : openSync(opts.stderrFile, "a");
  const stdin = opts.stdin;
  const proc = Bun.spawn([...(opts.wrap ?? []), opts.executable ?? SOCKET, ...args], {
    stdin: stdin === "pipe" ? "pipe" : stdin === undefined ? "ignore" : new Blob([stdin]),
    stdout: "pipe",
    stderr: errFd ?? "pipe",
    env: { ...process.env, ...opts.env },
    cwd: opts.cwd,
    detached: true,
  });
  if (errFd !== undefined) closeSync(errFd); // socket has its own copy
  const err = errFd === undefined ? collect(proc.stderr as ReadableStream<Uint8Array>) : undefined;
  const out = collect(proc.stdout);
  const kill = async (signal: NodeJS.Signals = "SIGKILL") => {
    const family = [-proc.pid, proc.pid, ...descendantsOf(proc.pid)];
    for (const pid of family) {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
    await Promise.race([proc.exited, Bun.sleep(3000)]);
    // Programs started for connections are not our children once their worker is gone.
    for (const pid of family) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
  };
  const stderr = err ? err.text : () => (existsSync(opts.stderrFile!) ? readFileSync(opts.stderrFile!, "utf8") : "");
  return {
    proc,
    stdin: stdin === "pipe" ? (proc.stdin as FileSink) : undefined,
    stderr,
    stdout: out.text,
    exited: async () => {
      const status = await proc.exited;
      await Promise.all([out.done, err?.done]);
      return status;
    },
    kill,
    [Symbol.asyncDispose]: () => kill(),
  };
}

export interface Server extends Running {
  /** The port (TCP) or path (UNIX) to connect to. */
  target: Target;
}

/**
 * Starts `dist/socket -v ARGS` and waits for its "listening"/"bound"
 * message. Use port 0 to get a free port from the kernel.
 */
export async function startServer(args: string[], opts: Launch = {}): Promise<Server> {
  const server = launch(["-v", ...args], opts);
  let target: Target | undefined;
  try {
    await waitFor("the server to listen", () => {
      const m = server.stderr().match(/inet: listening on port (\d+)|unix: bound to (\S+)/);
      if (m) target = m[1] ? Number(m[1]) : m[2];
      if (server.proc.exitCode !== null) throw new Error(`server exited ${server.proc.exitCode}: ${server.stderr()}`);
      return target !== undefined;
    }, opts.startMs);
  } catch (e) {
    await server.kill();
    throw e;
  }
  return Object.assign(server, { target: target! });
}

export interface Reply {
  data: Buffer;
  /** How the connection ended: the peer closed, or it was reset/errored. */
  ended: "closed" | "error";
}

/**
 * One client connection: connect, send `payload`, half-close (unless
 * halfClose is false), read until the server closes. Bounded by `ms`.
 */
export function exchange(
  target: Target,
  payload: string | Uint8Array,
  opts: { halfClose?: boolean; ms?: number } = {},
): Promise<Reply> {
  const chunks: Buffer[] = [];
  const ms = opts.ms ?? 5000;
  return new Promise<Reply>((resolve, reject) => {
    let pending = typeof payload === "string" ? Buffer.from(payload) : Buffer.from(payload);
    const timer = setTimeout(() => reject(new Error(`no end of reply within ${ms} ms (got ${chunks.length} chunks)`)), ms);
    const finish = (ended: Reply["ended"]) => {
      clearTimeout(timer);
      resolve({ data: Buffer.concat(chunks), ended });
    };
    const flush = (s: import("bun").Socket<undefined>) => {
      while (pending.length > 0) {
        const n = s.write(pending);
        if (n <= 0) return;
        pending = pending.subarray(n);
      }
      if (opts.halfClose !== false) s.shutdown();
    };
    const handlers = {
      open: flush,
      drain: flush,
      data: (_s: unknown, d: Buffer) => void chunks.push(Buffer.from(d)),
      end: (s: import("bun").Socket<undefined>) => void s.end(),
      close: () => finish("closed"),
      error: () => finish("error"),
      connectError: (_s: unknown, e: Error) => {
        clearTimeout(timer);
        reject(e);
      },
    };
    const connect =
      typeof target === "number"
        ? Bun.connect({ hostname: "127.0.0.1", port: target, socket: handlers, allowHalfOpen: true })
        : Bun.connect({ unix: target, socket: handlers });
    connect.catch((e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** The send queue (unacknowledged bytes) and receive queue (unread bytes) of the local TCP socket `from` -> `to` (/proc/net/tcp, tcp6). */
function tcpQueues(from: number, to: number): { unacked: number; unread: number } | undefined {
  const port = (address: string) => parseInt(address.slice(address.lastIndexOf(":") + 1), 16);
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of readFileSync(file, "utf8").split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 5 || port(fields[1]) !== from || port(fields[2]) !== to) continue;
      const [tx, rx] = fields[4].split(":").map((hex) => parseInt(hex, 16));
      return { unacked: tx, unread: rx };
    }
  }
  return undefined;
}

/**
 * Waits until the server has read every byte this client sent it so far
 * (acknowledged to the client, nothing left in the server's receive queue):
 * what the client sends next reaches a server that has already read this.
 */
export function serverHasRead(client: { localPort: number }, serverPort: number): Promise<void> {
  return waitFor(
    "the server to read what was sent",
    // A socket no longer listed is closed: nothing of it is left unread or unacknowledged.
    () => (tcpQueues(client.localPort, serverPort)?.unacked ?? 0) === 0 && (tcpQueues(serverPort, client.localPort)?.unread ?? 0) === 0,
    5000,
    1,
  );
}

/** Runs dist/socket to completion (bounded by `ms`) and returns what it said. */
export async function run(
  args: string[],
  opts: Omit<Launch, "stdin" | "stderrFile"> & { stdin?: string | Uint8Array; ms?: number } = {},
): Promise<{ status: number; stdout: string; stderr: string }> {
  await using proc = launch(args, opts);
  const timer = setTimeout(() => proc.proc.kill("SIGKILL"), opts.ms ?? 5000);
  try {
    const status = await proc.exited();
    return { status, stdout: proc.stdout(), stderr: proc.stderr() };
  } finally {
    clearTimeout(timer);
  }
}

type PeerSocket = import("bun").Socket<{ received: Buffer[] }>;

/**
 * A plain Bun TCP or UNIX server for client tests: `onConnection` runs on
 * connect, `onEnd` when the client half-closes; what each connection sent
 * is kept in `received`.
 */
export function peerServer(
  onConnection: (socket: PeerSocket) => void,
  where: { unix?: string } = {},
  onEnd: (socket: PeerSocket) => void = (s) => void s.end(),
): { target: Target; received: Buffer[][]; [Symbol.dispose](): void } {
  const received: Buffer[][] = [];
  const socket = {
    open(s: PeerSocket) {
      s.data = { received: [] };
      received.push(s.data.received);
      onConnection(s);
    },
    data(s: PeerSocket, d: Buffer) {
      s.data.received.push(Buffer.from(d));
    },
    end: onEnd,
  };
  const listener = where.unix
    ? Bun.listen<{ received: Buffer[] }>({ unix: where.unix, socket, allowHalfOpen: true } as Parameters<typeof Bun.listen<{ received: Buffer[] }>>[0])
    : Bun.listen<{ received: Buffer[] }>({ hostname: "127.0.0.1", port: 0, socket, allowHalfOpen: true });
  const target = where.unix ?? (listener as { port: number }).port;
  return { target, received, [Symbol.dispose]: () => listener.stop(true) };
}

/**
 * A program that reports when it started and ended (ns since the epoch),
 * so tests can check order of service rather than durations.
 */
export const TIMED_PROGRAM = "echo start $(date +%s%N); sleep 0.4; echo end $(date +%s%N)";

export function timeline(reply: Reply): { start: number; end: number } {
  const text = reply.data.toString();
  const field = (name: string) => Number(text.match(new RegExp(`${name} (\\d+)`))?.[1] ?? NaN) / 1e6;
  return { start: field("start"), end: field("end") };
}

/** A NOTIFY_SOCKET (a path, or "@name" for an abstract one): socat receives the datagrams and prints them. */
export function notifyReceiver(address: string): { text(): string } & AsyncDisposable {
  const kind = address.startsWith("@") ? `ABSTRACT-RECV:${address.slice(1)}` : `UNIX-RECV:${address}`;
  const proc = Bun.spawn(["socat", "-u", kind, "STDOUT"], { stdout: "pipe", stderr: "ignore" });
  const out = collect(proc.stdout);
  return {
    text: out.text,
    [Symbol.asyncDispose]: async () => {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}

/** Writes an executable file (a CGI program, a script) at `path`, and returns the path. */
export function writeExecutable(path: string, text: string, mode = 0o755): string {
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

/** A small, fast, seeded generator (mulberry32): the same seed, the same inputs. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The pid a program wrote to `dir`/`name` (`echo $$ > name`), once it has. */
export async function pidWritten(dir: string, name: string): Promise<number> {
  const file = join(dir, name);
  await waitFor(`${name} to be written`, () => existsSync(file) && /^\d+\n$/.test(readFileSync(file, "utf8")));
  return Number(readFileSync(file, "utf8"));
}

/** The status page's JSON (--status on a UNIX socket). */
export async function statusJson(path: string): Promise<Record<string, number | string>> {
  const res = await fetch("http://localhost/status?json", { unix: path });
  return (await res.json()) as Record<string, number | string>;
}
