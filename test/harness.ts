// Test support: run the compiled dist/socket for real, talk to it over real
// sockets on 127.0.0.1 and in temporary directories, and leave nothing
// behind (every handle is AsyncDisposable: use `await using`).
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";

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

/** Alive and not a zombie (kill -0 succeeds on zombies: SPEC section 7). */
export function isAlive(pid: number): boolean {
  const state = processState(pid);
  return state !== undefined && state !== "Z" && state !== "X";
}

/** Live children of a process. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === pid && fields[0] !== "Z") out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Processes whose command line contains `text` (pgrep -f, without its option parsing). */
export function pidsByCommandLine(text: string): number[] {
  return readdirSync("/proc").filter((e) => {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) return false;
    try {
      return readFileSync(`/proc/${e}/cmdline`, "utf8").replaceAll("\0", " ").includes(text);
    } catch {
      return false;
    }
  }).map(Number);
}

/** A pool master's live workers (its children running in worker mode). */
export function workersOf(master: number): number[] {
  return childrenOf(master).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("--pool-worker");
    } catch {
      return false;
    }
  });
}

export function descendantsOf(pid: number): number[] {
  const direct = childrenOf(pid);
  return [...direct, ...direct.flatMap(descendantsOf)];
}

/** Polls until `check` holds, or fails the test after `ms`. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(20);
  }
}

/** Collects a stream's text as it comes, so tests can wait for a line. */
class Collector {
  text = "";
  constructor(stream: ReadableStream<Uint8Array> | undefined) {
    if (stream) void this.drain(stream);
  }
  private async drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) this.text += decoder.decode(chunk, { stream: true });
  }
}

export interface Server extends AsyncDisposable {
  proc: Subprocess<"pipe" | "ignore", "pipe", "pipe">;
  /** The port (TCP) or path (UNIX) to connect to. */
  target: Target;
  stderr: () => string;
  stdout: () => string;
  /** Ends the server and every process it started. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Starts `dist/socket -v ARGS` and waits for its "listening"/"bound"
 * message. Use port 0 to get a free port from the kernel.
 */
export async function startServer(
  args: string[],
  opts: { stdin?: "pipe" | "ignore"; env?: Record<string, string>; wrap?: string[] } = {},
): Promise<Server> {
  // `wrap`: a command that runs socket (unshare, systemd-socket-activate); kill() still ends it all.
  // Its own process group: kill() reaches what the tree walk cannot, such as
  // a prestarted program left behind when its worker died.
  const proc = Bun.spawn([...(opts.wrap ?? []), SOCKET, "-v", ...args], {
    stdin: opts.stdin ?? "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...opts.env },
    detached: true,
  });
  const err = new Collector(proc.stderr);
  const out = new Collector(proc.stdout);
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
  let target: Target | undefined;
  try {
    await waitFor("the server to listen", () => {
      const m = err.text.match(/inet: listening on port (\d+)|unix: bound to (\S+)/);
      if (m) target = m[1] ? Number(m[1]) : m[2];
      if (proc.exitCode !== null) throw new Error(`server exited ${proc.exitCode}: ${err.text}`);
      return target !== undefined;
    });
  } catch (e) {
    await kill();
    throw e;
  }
  return {
    proc,
    target: target!,
    stderr: () => err.text,
    stdout: () => out.text,
    kill,
    [Symbol.asyncDispose]: () => kill(),
  };
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

/** Runs dist/socket to completion (bounded) and returns what it said. */
export async function run(
  args: string[],
  opts: { stdin?: string | Uint8Array; ms?: number; env?: Record<string, string>; cwd?: string } = {},
): Promise<{ status: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn([SOCKET, ...args], {
    stdin: opts.stdin === undefined ? "ignore" : new Blob([opts.stdin]),
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...opts.env },
    cwd: opts.cwd,
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), opts.ms ?? 5000);
  try {
    const [stdout, stderr, status] = await Promise.all([
      new Response(proc.stdout).text(),
      new Response(proc.stderr).text(),
      proc.exited,
    ]);
    return { status, stdout, stderr };
  } finally {
    clearTimeout(timer);
    proc.kill("SIGKILL");
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
