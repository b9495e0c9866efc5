// --status over HTTP: a small HTTP/1.x responder on Bun.listen, not
// Bun.serve. Bun.serve has no cap on connections and only an idle timeout
// (a client sending a byte every few seconds held its descriptor for good,
// and enough of them left the master none to start a worker with), and a
// request it could not parse (HTTP/1.0 without Host, a Host with a space)
// got its development error page while a stack trace went to stderr each
// time. The page needs only GET and HEAD of a few paths, answered at once
// with Connection: close, so the whole server fits here with firm bounds:
// a request's header is read up to MAX_HEAD within an absolute deadline,
// the master holds at most connectionCap() connections (one more is closed
// as it is accepted), --allow/--deny apply, and a malformed request gets
// 400 and at most one line a second.
import type { Socket, SocketHandler } from "bun";
import type { InetAddress } from "../net/address.ts";
import { listen } from "../net/listener.ts";
import { AccessRules } from "../net/rules.ts";
import type { Options, StatusAddress } from "../options.ts";
import { descriptorLimit } from "../system/fd.ts";
import { verbose, warn } from "../system/log.ts";
import { atExit } from "../system/signals.ts";
import { statusAnswer, type Answer, type PoolSnapshot } from "./status.ts";
import { fs } from "../system/builtins.ts";

/** From accept to close: reading the request, answering, and the client's reading the answer. */
export const DEADLINE_MS = 5000;
/** The request line and header fields together. */
export const MAX_HEAD = 8192;
/** The most connections the page holds at once, however many descriptors there are. */
export const MOST_CONNECTIONS = 64;
/** Descriptors left to the master itself: Bun's own, the listener, the log, the pid file, a USR2 successor, one worker's start. */
const MASTER_RESERVE = 32;
/** Per worker: its control socket, Bun's IPC socket and its pidfd; twice, as HUP runs the old and new workers at once. */
const PER_WORKER = 2 * 3;

/** How many connections the page may hold: what the descriptor limit leaves after the pool's own need, at least 1. */
export function connectionCap(limit: number, poolMax: number): number {
  return Math.max(1, Math.min(MOST_CONNECTIONS, limit - MASTER_RESERVE - PER_WORKER * poolMax));
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A Host field's value: uri-host [ ":" port ], or empty (RFC 9110 7.2). */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)?(?::\d*)?$/;

/** A request the page can answer, or why it cannot (a 400). */
export function parseRequest(head: string): { method: string; url: URL } | string {
  const [line = "", ...fields] = head.split(/\r?\n/);
  const m = line.match(/^(\S+) (\S+) HTTP\/1\.([01])$/);
  if (!m || !TOKEN.test(m[1]!)) return "not an HTTP/1.0 or 1.1 request line";
  let hosts = 0;
  for (const field of fields) {
    const colon = field.indexOf(":");
    if (colon < 1 || !TOKEN.test(field.slice(0, colon))) return "a malformed header field";
    if (field.slice(0, colon).toLowerCase() !== "host") continue;
    hosts++;
    if (!HOST.test(field.slice(colon + 1).trim())) return "a malformed Host";
  }
  if (hosts > 1) return "more than one Host";
  // RFC 9112 3.2: a server must refuse HTTP/1.1 without one; HTTP/1.0 probes (HAProxy's httpchk) send none.
  if (hosts === 0 && m[3] === "1") return "HTTP/1.1 without Host";
  const target = m[2]!;
  if (!target.startsWith("/") && !/^https?:\/\//i.test(target)) return "a malformed request target";
  try {
    return { method: m[1]!, url: new URL(target.startsWith("/") ? `http://status${target}` : target) };
  } catch {
    return "a malformed request target";
  }
}

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  431: "Request Header Fields Too Large",
  503: "Service Unavailable",
};

/** An answer as HTTP/1.1 bytes; the connection closes after it. */
export function responseBytes(a: Answer, head: boolean): Buffer {
  const body = Buffer.from(a.body);
  const fields = [`Content-Type: ${a.type}`, `Content-Length: ${body.length}`, "Cache-Control: no-store", "Connection: close"];
  if (a.allow) fields.push(`Allow: ${a.allow}`);
  const top = Buffer.from(`HTTP/1.1 ${a.status} ${REASONS[a.status] ?? "Error"}\r\n${fields.join("\r\n")}\r\n\r\n`);
  return head ? top : Buffer.concat([top, body]);
}

/** One connection: what it sent so far; once answered, what is left to write (undefined once ended). */
interface Exchange {
  head: string;
  deadline: Timer;
  answered: boolean;
  out: Buffer | undefined;
}
type Client = Socket<Exchange | undefined>;

/** Writes what is left of the answer; ends the connection once it is all out. */
function flush(s: Client): void {
  const x = s.data;
  if (!x?.out) return;
  while (x.out.length > 0) {
    const n = s.write(x.out);
    if (n <= 0) return; // the drain event comes back here
    x.out = x.out.subarray(n);
  }
  x.out = undefined;
  s.end();
}

function answer(s: Client, x: Exchange, snapshot: () => PoolSnapshot): void {
  const end = x.head.search(/\r?\n\r?\n/);
  const plain = "text/plain; charset=utf-8";
  let reply: Answer;
  let head = false;
  const request = end < 0 || end > MAX_HEAD ? undefined : parseRequest(x.head.slice(0, end));
  if (typeof request === "object") {
    head = request.method === "HEAD";
    reply = statusAnswer(request.method, request.url, snapshot);
  } else {
    const why = request ?? `a header over ${MAX_HEAD} bytes`;
    warn("status request", `status page: ${why} from ${s.remoteAddress || "a local client"}: answered ${request ? 400 : 431}`);
    reply = { status: request ? 400 : 431, body: `bad request: ${why}\n`, type: plain };
  }
  x.head = "";
  x.answered = true; // what the client sends after its header is not read
  x.out = responseBytes(reply, head);
  flush(s);
}

/** The page's connections: counted and capped, each cut at its deadline. */
function handlers(snapshot: () => PoolSnapshot, cap: () => number, rules: AccessRules | undefined): SocketHandler<Exchange | undefined> {
  let open = 0;
  return {
    open(s) {
      // Closed at once: a descriptor held for a refused client is what the cap is there to prevent.
      if (rules && !rules.permits(s.remoteAddress)) return void s.terminate();
      if (open >= cap()) {
        warn("status full", `status page: ${open} connections open, the most it holds: closing more`);
        return void s.terminate();
      }
      open++;
      s.data = { head: "", answered: false, out: undefined, deadline: setTimeout(() => s.terminate(), DEADLINE_MS) };
    },
    data(s, chunk) {
      const x = s.data;
      if (!x || x.answered) return;
      // Only the new bytes and the three before them are searched: a byte at a time must not cost the whole header each time.
      const from = Math.max(0, x.head.length - 3);
      x.head += chunk.toString("latin1");
      if (x.head.length > MAX_HEAD || /\r?\n\r?\n/.test(x.head.slice(from))) answer(s, x, snapshot);
    },
    drain: flush,
    // The client ended before its request did: nothing to answer.
    end(s) {
      if (s.data && !s.data.answered) s.terminate();
    },
    close(s) {
      if (!s.data) return;
      clearTimeout(s.data.deadline);
      s.data = undefined;
      open--;
    },
    error() {
      // a reset client: its close follows
    },
  };
}

/**
 * Binds the page, before -u/-g apply, as the main listener (a UNIX socket
 * file is given to -u/-g as the main one is: runPool's afterBind). A USR2
 * successor (`successor`) binds while the old master still serves its
 * page: on TCP both hold the port (SO_REUSEPORT) until the old one hands over;
 * a UNIX path is taken over, and the old master, once it has handed over
 * (`handedOver`), leaves the path to its successor. Returns what stops
 * it once handed over, so that the successor's page alone answers (a
 * UNIX one is left: its path is the successor's now, and stopping Bun's
 * listener would unlink it).
 */
export function serveStatus(
  where: StatusAddress,
  options: Options,
  snapshot: () => PoolSnapshot,
  successor: boolean,
  handedOver: () => boolean,
  /** The most workers the pool may have now (TTIN raises it). */
  poolMax: () => number,
): () => void {
  const limit = descriptorLimit();
  // A UNIX socket's access is its file's (--mode, -u, -g), as the main socket's.
  const rules = where.kind === "inet" && options.access.length > 0 ? new AccessRules(options.access) : undefined;
  const socket = handlers(snapshot, () => connectionCap(limit, poolMax()), rules);
  if (where.kind === "unix") {
    if (successor) fs().rmSync(where.path, { force: true });
    listen(where, socket, { mode: options.mode, name: "status socket" });
    atExit(() => {
      if (handedOver()) return;
      try {
        fs().unlinkSync(where.path);
      } catch {
        // already gone
      }
    });
    verbose(options, `pool: status page on unix:${where.path}/status`);
    return () => {};
  }
  const address: InetAddress = { kind: "inet", ip: where.host, family: where.host.includes(":") ? 6 : 4, port: where.port, service: undefined };
  const page = listen(address, socket, { reusePort: true, name: "status socket" });
  const port = page.address.kind === "inet" ? page.address.port : where.port;
  verbose(options, `pool: status page on http://${address.family === 6 ? `[${where.host}]` : where.host}:${port}/status`);
  return () => page.listener.stop();
}
