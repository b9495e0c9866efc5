// --status: the pool master's status page and health check. This module
// keeps the counts and renders a snapshot the master gives it, in php-fpm's
// field names (plain text, ?json) or in Prometheus' text format
// (?openmetrics), and answers /ping; status-http.ts serves it over HTTP.
import { BACKLOG } from "../net/listener.ts";
import { acceptQueue } from "../system/socket.ts";
import { say } from "../system/log.ts";
import { fs } from "../system/builtins.ts";

/** One worker as the page shows it (?full). */
export interface WorkerView {
  pid: number;
  state: "starting" | "idle" | "busy";
  /** Connections it has served (its current one included). */
  served: number;
  startedAt: number;
  /** When its running connection began; undefined when it has none. */
  busySince: number | undefined;
  /** How long its last finished connection took, in ms. */
  lastMs: number | undefined;
  /** --scgi/--fastcgi: the last request's method and URI ("GET /x"). */
  request: string | undefined;
}

/** The counters the master keeps from its workers' messages. */
export class PoolCounters {
  readonly startTime = Date.now();
  accepted = 0;
  maxActive = 0;
  maxChildrenReached = 0;
  maxListenQueue = 0;
  slow = 0;
  failedPrograms = 0;
  workersStarted = 0;
  refused = 0;
  requestTimeouts = 0;
}

/** A worker as the master knows it. */
export type WorkerFacts = Pick<WorkerView, "pid" | "state" | "served" | "startedAt">;

/** What the watch keeps per worker beyond the master's facts. */
interface Extra {
  busySince: number | undefined;
  lastMs: number | undefined;
  /** The running (or last) request's method and URI, when a gateway said. */
  request: string | undefined;
  slowTimer: Timer | undefined;
}

/** How often the accept queue is sampled while every worker is busy at the pool's maximum. */
const SATURATED_PROBE_MS = 100;

/**
 * What --status and --slow add to the master: the counters, each worker's
 * timings, the slow line, and the accept queue sampled while the pool is
 * full. The master calls it from its own events (started, busy, idle,
 * exit, balanced) and asks it for the page's snapshot.
 */
export class PoolWatch {
  readonly counters = new PoolCounters();
  private readonly extra = new Map<number, Extra>();
  private probe: Timer | undefined;
  /** This moment of a full pool has already been counted in max children reached. */
  private counted = false;

  constructor(
    private readonly listenFd: number,
    private readonly unix: boolean,
    private readonly slowMs: number | undefined,
    /** --status: the queue is sampled only for a page someone can read. */
    private readonly paged: boolean,
  ) {}

  started(pid: number): void {
    this.counters.workersStarted++;
    this.extra.set(pid, { busySince: undefined, lastMs: undefined, request: undefined, slowTimer: undefined });
  }

  busy(pid: number, busyNow: number): void {
    const e = this.extra.get(pid);
    if (!e) return;
    this.counters.accepted++;
    this.counters.maxActive = Math.max(this.counters.maxActive, busyNow);
    e.busySince = Date.now();
    e.request = undefined; // a plain connection has none; a gateway's says its own
    clearTimeout(e.slowTimer);
    const slowMs = this.slowMs;
    if (slowMs === undefined) return;
    e.slowTimer = setTimeout(() => {
      this.counters.slow++;
      const ran = ((Date.now() - (e.busySince ?? Date.now())) / 1000).toFixed(1);
      say(`slow: worker ${pid}: connection still running after ${ran} s${e.request ? ` (${e.request})` : ""}`);
    }, slowMs);
  }

  idle(pid: number): void {
    const e = this.extra.get(pid);
    if (!e) return;
    clearTimeout(e.slowTimer);
    if (e.busySince !== undefined) e.lastMs = Date.now() - e.busySince;
    e.busySince = undefined;
    this.counted = false; // a worker is free: a later wait is a new moment
  }

  ended(pid: number): void {
    clearTimeout(this.extra.get(pid)?.slowTimer);
    this.extra.delete(pid);
  }

  request(pid: number, text: string): void {
    const e = this.extra.get(pid);
    if (e) e.request = text.slice(0, 200).replace(/[^\x20-\x7e]/g, "?"); // a client's bytes must not make lines of their own
  }

  /** What happened in a worker (not its state): a program that failed to start, a refused peer, a --request-timeout, a request's line. */
  noted(pid: number, message: "failed" | "refused" | "overdue" | { request: string }): void {
    if (message === "failed") this.counters.failedPrograms++;
    else if (message === "refused") this.counters.refused++;
    else if (message === "overdue") this.counters.requestTimeouts++;
    else this.request(pid, message.request);
  }

  /** After the master balanced its pool: whether every worker is busy and no more may start. */
  balanced(full: boolean): void {
    if (!this.paged) return;
    if (full && !this.probe) {
      this.probe = setInterval(() => this.sample(), SATURATED_PROBE_MS);
      this.probe.unref();
      this.sample();
    } else if (!full && this.probe) {
      clearInterval(this.probe);
      this.probe = undefined;
    }
  }

  /** The accept queue now; a connection waiting in a full pool counts once per such moment. */
  private sample(): { waiting: number; backlog: number } {
    const queue = queueOf(this.listenFd, this.unix);
    this.counters.maxListenQueue = Math.max(this.counters.maxListenQueue, queue.waiting);
    if (this.probe && queue.waiting > 0 && !this.counted) {
      this.counted = true;
      this.counters.maxChildrenReached++;
    }
    return queue;
  }

  snapshot(pool: string, dynamic: boolean, workers: WorkerFacts[]): PoolSnapshot {
    const queue = this.sample();
    const views = workers.map((w) => {
      const e = this.extra.get(w.pid);
      return { ...w, busySince: e?.busySince, lastMs: e?.lastMs, request: e?.request };
    });
    return { pool, dynamic, counters: this.counters, queue, workers: views };
  }
}

/** Everything the page says, at one moment. */
export interface PoolSnapshot {
  pool: string;
  dynamic: boolean;
  counters: PoolCounters;
  queue: { waiting: number; backlog: number };
  workers: WorkerView[];
}

/**
 * The listener's accept queue now. TCP: from the kernel (TCP_INFO). A UNIX
 * listener has no such report (SIOCINQ refuses listening sockets): its
 * queue is given as 0, and its backlog as socket's, capped by somaxconn.
 */
export function queueOf(listenFd: number, unix: boolean): { waiting: number; backlog: number } {
  if (!unix) {
    try {
      return acceptQueue(listenFd);
    } catch {
      // not TCP after all (a passed socket): as for UNIX
    }
  }
  let max = BACKLOG;
  try {
    max = Math.min(BACKLOG, Number(fs().readFileSync("/proc/sys/net/core/somaxconn", "utf8").trim()) || BACKLOG);
  } catch {
    // no /proc: socket's own
  }
  return { waiting: 0, backlog: max };
}

/** php-fpm's "start time" text: 01/Dec/2026:09:42:55 +0000 (local time). */
function fpmTime(ms: number): string {
  const d = new Date(ms);
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const two = (n: number) => String(n).padStart(2, "0");
  const offset = -d.getTimezoneOffset();
  const zone = `${offset < 0 ? "-" : "+"}${two(Math.floor(Math.abs(offset) / 60))}${two(Math.abs(offset) % 60)}`;
  return `${two(d.getDate())}/${months[d.getMonth()]}/${d.getFullYear()}:${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())} ${zone}`;
}

const secs = (ms: number) => Math.floor(ms / 1000);

/** The pool's fields in php-fpm's order and names (then socket's own), values as JSON gives them. */
function fields(s: PoolSnapshot, now: number): [string, string | number][] {
  const c = s.counters;
  const busy = s.workers.filter((w) => w.state === "busy").length;
  const idle = s.workers.filter((w) => w.state === "idle").length;
  return [
    ["pool", s.pool],
    ["process manager", s.dynamic ? "dynamic" : "static"],
    ["start time", secs(c.startTime)],
    ["start since", secs(now - c.startTime)],
    ["accepted conn", c.accepted],
    ["listen queue", s.queue.waiting],
    ["max listen queue", Math.max(c.maxListenQueue, s.queue.waiting)],
    ["listen queue len", s.queue.backlog],
    ["idle processes", idle],
    ["active processes", busy],
    ["total processes", s.workers.length],
    ["max active processes", c.maxActive],
    ["max children reached", c.maxChildrenReached],
    ["slow requests", c.slow],
    ["failed programs", c.failedPrograms],
    ["workers started", c.workersStarted],
    ["refused conn", c.refused],
    ["request timeouts", c.requestTimeouts],
  ];
}

/** One worker's fields: php-fpm's (request duration in µs: the running connection's, else the last one's), then socket's. */
function workerFields(w: WorkerView, now: number): [string, string | number][] {
  const age = w.busySince === undefined ? 0 : now - w.busySince;
  return [
    ["pid", w.pid],
    ["state", w.state === "busy" ? "Running" : w.state === "idle" ? "Idle" : "Starting"],
    ["start time", secs(w.startedAt)],
    ["start since", secs(now - w.startedAt)],
    ["requests", w.served],
    ["request duration", Math.round((w.busySince === undefined ? (w.lastMs ?? 0) : age) * 1000)],
    // php-fpm's "-" when unknown: plain connections have no request.
    ["request method", w.request?.split(" ")[0] || "-"],
    ["request URI", w.request?.split(" ").slice(1).join(" ") || "-"],
    ["connection age", age / 1000],
    ["last duration", (w.lastMs ?? 0) / 1000],
  ];
}

function text(s: PoolSnapshot, full: boolean, now: number): string {
  const line = ([name, value]: [string, string | number]) => `${`${name}:`.padEnd(22)}${name === "start time" ? fpmTime(Number(value) * 1000) : value}\n`;
  let out = fields(s, now).map(line).join("");
  if (full) for (const w of s.workers) out += "\n************************\n" + workerFields(w, now).map(line).join("");
  return out;
}

function json(s: PoolSnapshot, full: boolean, now: number): string {
  const page: Record<string, unknown> = Object.fromEntries(fields(s, now));
  // php-fpm's JSON spells it "request uri", its text "request URI".
  const key = (name: string) => (name === "request URI" ? "request uri" : name);
  if (full) page.processes = s.workers.map((w) => Object.fromEntries(workerFields(w, now).map(([k, v]) => [key(k), v])));
  return JSON.stringify(page);
}

/** Prometheus' text format (what promtool checks): HELP and TYPE per metric, counters end in _total. */
function metrics(s: PoolSnapshot, full: boolean, now: number): string {
  const c = s.counters;
  const f = Object.fromEntries(fields(s, now));
  const rows: [name: string, type: "gauge" | "counter", help: string, value: number][] = [
    ["socket_start_time_seconds", "gauge", "When the pool master started (Unix time).", c.startTime / 1000],
    ["socket_accepted_connections_total", "counter", "Connections the workers accepted and served.", c.accepted],
    ["socket_listen_queue", "gauge", "Connections waiting in the kernel's accept queue now (0 on a UNIX socket).", s.queue.waiting],
    ["socket_max_listen_queue", "gauge", "The longest accept queue seen since start.", Number(f["max listen queue"])],
    ["socket_listen_queue_length", "gauge", "The listener's backlog.", s.queue.backlog],
    ["socket_idle_processes", "gauge", "Workers waiting for a connection.", Number(f["idle processes"])],
    ["socket_active_processes", "gauge", "Workers serving a connection.", Number(f["active processes"])],
    ["socket_total_processes", "gauge", "Workers running.", s.workers.length],
    ["socket_max_active_processes", "gauge", "The most workers busy at once since start.", c.maxActive],
    ["socket_max_children_reached_total", "counter", "Times connections waited with every worker busy at the pool's maximum.", c.maxChildrenReached],
    ["socket_slow_requests_total", "counter", "Connections still running after --slow.", c.slow],
    ["socket_failed_programs_total", "counter", "Programs that could not start or exited 126 or 127.", c.failedPrograms],
    ["socket_workers_started_total", "counter", "Workers started since start.", c.workersStarted],
    ["socket_refused_connections_total", "counter", "Connections closed by --allow/--deny.", c.refused],
    ["socket_request_timeouts_total", "counter", "Requests (gateway requests and -p connections) ended by --request-timeout, and gateway requests ended by --send-timeout.", c.requestTimeouts],
  ];
  let out = "";
  for (const [name, type, help, value] of rows) out += `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${value}\n`;
  if (full) {
    const per: [string, "gauge" | "counter", string, (w: WorkerView) => number][] = [
      ["socket_worker_connections_total", "counter", "Connections this worker served.", (w) => w.served],
      ["socket_worker_busy", "gauge", "1 while this worker serves a connection.", (w) => (w.state === "busy" ? 1 : 0)],
      ["socket_worker_start_time_seconds", "gauge", "When this worker started (Unix time).", (w) => w.startedAt / 1000],
      ["socket_worker_connection_age_seconds", "gauge", "How long its running connection has run (0: none).", (w) => (w.busySince === undefined ? 0 : (now - w.busySince) / 1000)],
      ["socket_worker_last_duration_seconds", "gauge", "How long its last finished connection took.", (w) => (w.lastMs ?? 0) / 1000],
    ];
    for (const [name, type, help, value] of per) {
      out += `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
      for (const w of s.workers) out += `${name}{pid="${w.pid}"} ${value(w)}\n`;
    }
  }
  return `${out}# EOF\n`;
}

/** One answer of the page, before HTTP framing (status-http.ts). */
export interface Answer {
  status: number;
  body: string;
  type: string;
  /** 405: the methods the page answers. */
  allow?: string;
}

/** The page's answer to `method` on `url` (GET and HEAD only). */
export function statusAnswer(method: string, url: URL, snapshot: () => PoolSnapshot): Answer {
  const plain = "text/plain; charset=utf-8";
  if (method !== "GET" && method !== "HEAD") return { status: 405, body: "only GET\n", type: plain, allow: "GET, HEAD" };
  if (url.pathname === "/ping") {
    const waiting = snapshot().workers.some((w) => w.state === "idle");
    return waiting ? { status: 200, body: "pong\n", type: plain } : { status: 503, body: "no worker waits\n", type: plain };
  }
  if (url.pathname !== "/status") return { status: 404, body: "not found: try /status or /ping\n", type: plain };
  const s = snapshot();
  const now = Date.now();
  const full = url.searchParams.has("full");
  if (url.searchParams.has("json")) return { status: 200, body: json(s, full, now), type: "application/json" };
  if (url.searchParams.has("openmetrics")) return { status: 200, body: metrics(s, full, now), type: "text/plain; version=0.0.4; charset=utf-8" };
  return { status: 200, body: text(s, full, now), type: plain };
}
