// The benchmark's load generator: many connections at once from one
// process, event-driven (Bun.connect), not a process per request. Each
// connection: connect, send the payload, half-close, read to EOF, and
// compare the reply with the payload byte for byte. httpGet is the same
// for one HTTP/1.0 request through nginx (the launchers' scenario).
import type { Socket, SocketHandler } from "bun";

export interface Outcome {
  ok: boolean;
  /** Connect to EOF, in milliseconds. */
  ms: number;
  /** Why it failed, for the report ("" when ok). */
  error: string;
}

/** Where to connect: 127.0.0.1 (loopback only) or a UNIX socket (scripts/soak.ts). */
export type Target = { port: number } | { unix: string };

/** One connection. Never rejects (a failure is an outcome) and never outlives `timeoutMs`. */
export function exchange(target: Target, payload: Uint8Array, timeoutMs = 10_000): Promise<Outcome> {
  const started = performance.now();
  return new Promise<Outcome>((resolve) => {
    let sent = 0;
    let received = 0;
    let error = "";
    let done = false;
    let socket: Socket<undefined> | undefined;
    const finish = (why: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (!error && why) error = why;
      if (!error && received !== payload.length) error = `short reply (${received} of ${payload.length} bytes)`;
      resolve({ ok: !error, ms: performance.now() - started, error });
    };
    const timer = setTimeout(() => {
      finish("timeout");
      socket?.terminate();
    }, timeoutMs);
    // Writes what the socket takes now; the rest on "drain". Half-close once all is out.
    const pump = (s: Socket<undefined>) => {
      while (sent < payload.length) {
        const n = s.write(payload, sent, Math.min(payload.length - sent, 1 << 20));
        if (n < 0) return finish("write failed");
        if (n === 0) return;
        sent += n;
      }
      s.shutdown();
    };
    const handlers: SocketHandler<undefined> = {
      open(s) {
        socket = s;
        pump(s);
      },
      drain: pump,
      data(_s, chunk) {
        // Compared as it arrives, so a 100 MB reply is never kept.
        if (!error && !chunk.equals(payload.subarray(received, received + chunk.length))) {
          error = `reply differs at byte ${received}`;
        }
        received += chunk.length;
      },
      end: (s) => void s.end(),
      close: () => finish(""),
      error: (_s, e) => finish(`error: ${e.message}`),
      connectError: (_s, e) => finish(`connect: ${e.message}`),
    };
    // allowHalfOpen: our FIN must not close the read side, the reply is still coming.
    const connected = "port" in target
      ? Bun.connect({ hostname: "127.0.0.1", port: target.port, allowHalfOpen: true, socket: handlers })
      : Bun.connect({ unix: target.unix, allowHalfOpen: true, socket: handlers });
    connected.catch((e: Error) => finish(`connect: ${e.message}`));
  });
}

/** The value below which p percent of the sorted values lie (nearest rank). */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((sorted.length * p) / 100) - 1))];
}

export const median = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 50);

export interface Summary {
  count: number;
  failures: number;
  /** Successful connections per second of the time measured. */
  perSecond: number;
  p50: number;
  p99: number;
  /** The first failure's reason, if any. */
  firstError: string;
}

/** Outcomes and the wall time they took; runs of one server in several rounds are summed. */
export interface Run {
  outcomes: Outcome[];
  seconds: number;
}

export function summarize(runs: Run[]): Summary {
  const outcomes = runs.flatMap((r) => r.outcomes);
  const seconds = runs.reduce((sum, r) => sum + r.seconds, 0);
  const times = outcomes.filter((o) => o.ok).map((o) => o.ms).sort((a, b) => a - b);
  return {
    count: outcomes.length,
    failures: outcomes.length - times.length,
    perSecond: times.length / seconds,
    p50: percentile(times, 50),
    p99: percentile(times, 99),
    firstError: outcomes.find((o) => !o.ok)?.error ?? "",
  };
}

/** The request of the connection scenarios: about what a small SCGI request is. */
export const REQUEST = new TextEncoder().encode("GET /status HTTP/1.0 -- 64 bytes, about a small SCGI request...\n");

/**
 * `concurrency` clients, each opening its next connection as soon as the
 * last one ends, for `seconds` (connections under way then are finished
 * and counted; the time they take is too).
 */
export async function closedLoop(port: number, concurrency: number, seconds: number): Promise<Run> {
  const outcomes: Outcome[] = [];
  const started = performance.now();
  const end = started + seconds * 1000;
  const lane = async () => {
    while (performance.now() < end) outcomes.push(await exchange({ port }, REQUEST));
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return { outcomes, seconds: (performance.now() - started) / 1000 };
}

/**
 * `megabytes` of random bytes with no CR or LF, so that -c (which drops CR
 * and turns LF into CRLF) echoes them unchanged.
 */
export function bulkPayload(megabytes: number): Uint8Array {
  const payload = new Uint8Array(megabytes << 20);
  for (let i = 0; i < payload.length; i += 65536) crypto.getRandomValues(payload.subarray(i, i + 65536));
  for (let at = payload.indexOf(10); at >= 0; at = payload.indexOf(10, at + 1)) payload[at] = 32;
  for (let at = payload.indexOf(13); at >= 0; at = payload.indexOf(13, at + 1)) payload[at] = 32;
  return payload;
}

/** MB/s of the payload echoed through one connection (sent and received at once; MB = 2^20 bytes). */
export async function transfer(port: number, payload: Uint8Array): Promise<{ mbPerSecond: number; error: string }> {
  const outcome = await exchange({ port }, payload, 60_000);
  return { mbPerSecond: outcome.ok ? payload.length / 2 ** 20 / (outcome.ms / 1000) : NaN, error: outcome.error };
}

/** The body every launcher contender answers with (scripts/bench/hello-cgi.c, and nginx's own floor). */
export const HELLO = "hello\n";

/**
 * One HTTP/1.0 GET on a new connection, read to EOF (nginx closes it after
 * the answer). Not half-closed: nginx may take an early FIN for a client
 * that gave up. OK only for status 200 and the body HELLO.
 */
export const httpGet = (port: number, path = "/", timeoutMs = 10_000): Promise<Outcome> =>
  httpExchange(port, new TextEncoder().encode(`GET ${path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n`), HELLO, timeoutMs);

/** One HTTP/1.0 POST of `body`, as httpGet; OK only for status 200 and the body `expect`. */
export function httpPost(port: number, body: Uint8Array, expect = HELLO, timeoutMs = 10_000): Promise<Outcome> {
  const head = new TextEncoder().encode(`POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n`);
  const request = new Uint8Array(head.length + body.length);
  request.set(head);
  request.set(body, head.length);
  return httpExchange(port, request, expect, timeoutMs);
}

/** Sends a whole request (the rest on each drain: Bun's write takes what the kernel does), reads to EOF, checks status 200 and the body. */
function httpExchange(port: number, request: Uint8Array, expect: string, timeoutMs: number): Promise<Outcome> {
  const started = performance.now();
  return new Promise<Outcome>((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    let socket: Socket<undefined> | undefined;
    let sent = 0;
    const send = (s: Socket<undefined>) => {
      if (sent < request.length) sent += Math.max(0, s.write(request.subarray(sent)));
    };
    const finish = (why: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      let error = why;
      const answer = Buffer.concat(chunks).toString("latin1");
      if (!error && !/^HTTP\/1\.[01] 200 /.test(answer)) error = `answer: ${answer.split("\r\n")[0] || "none"}`;
      if (!error && !answer.endsWith(`\r\n\r\n${expect}`)) error = expect === HELLO ? "body is not hello" : `body is not ${JSON.stringify(expect)}`;
      resolve({ ok: !error, ms: performance.now() - started, error });
    };
    const timer = setTimeout(() => {
      finish("timeout");
      socket?.terminate();
    }, timeoutMs);
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(s) {
          socket = s;
          send(s);
        },
        drain: send,
        data: (_s, chunk) => void chunks.push(Buffer.from(chunk)),
        close: () => finish(""),
        error: (_s, e) => finish(`error: ${e.message}`),
        connectError: (_s, e) => finish(`connect: ${e.message}`),
      },
    }).catch((e: Error) => finish(`connect: ${e.message}`));
  });
}
