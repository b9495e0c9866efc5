// The benchmark's load generator: event-driven connections from one
// process (Bun.connect), each one connect, send, half-close, read to EOF,
// and compare the reply byte for byte.

export type Target = { port: number } | { unix: string };

export interface Outcome {
  ok: boolean;
  ms: number;
  bytes: number;
}

/** One connection; never rejects: a failure is an outcome. Bounded by `timeoutMs`. */
export function exchange(target: Target, payload: Uint8Array, timeoutMs = 10_000): Promise<Outcome> {
  const started = performance.now();
  return new Promise<Outcome>((resolve) => {
    let received = 0;
    let matches = true;
    let sent = 0;
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ ok: ok && matches && received === payload.length, ms: performance.now() - started, bytes: received });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    const pump = (s: import("bun").Socket<undefined>) => {
      while (sent < payload.length) {
        const n = s.write(payload.subarray(sent, sent + (1 << 20)));
        if (n <= 0) return;
        sent += n;
      }
      s.shutdown();
    };
    const socket = {
      open: pump,
      drain: pump,
      data(_s: unknown, chunk: Buffer) {
        // Compare as it arrives: no copy of a 100 MB reply is kept.
        if (matches && !chunk.equals(payload.subarray(received, received + chunk.length))) matches = false;
        received += chunk.length;
      },
      end: (s: import("bun").Socket<undefined>) => void s.end(),
      close: () => finish(true),
      error: () => finish(false),
      connectError: () => finish(false),
    };
    const options = "port" in target
      ? Bun.connect({ hostname: "127.0.0.1", port: target.port, socket, allowHalfOpen: true })
      : Bun.connect({ unix: target.unix, socket });
    options.catch(() => finish(false));
  });
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

export interface Summary {
  count: number;
  failures: number;
  perSecond: number;
  p50: number;
  p99: number;
}

function summarize(outcomes: Outcome[], seconds: number): Summary {
  const times = outcomes.filter((o) => o.ok).map((o) => o.ms).sort((a, b) => a - b);
  return {
    count: outcomes.length,
    failures: outcomes.filter((o) => !o.ok).length,
    perSecond: times.length / seconds,
    p50: percentile(times, 50),
    p99: percentile(times, 99),
  };
}

/** One connection at a time, with a pause between: what a lightly used server sees. */
export async function idleTurnaround(target: Target, count: number, pauseMs: number): Promise<Summary> {
  const outcomes: Outcome[] = [];
  const payload = new TextEncoder().encode("ping\n");
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    outcomes.push(await exchange(target, payload));
    await Bun.sleep(pauseMs);
  }
  return summarize(outcomes, (performance.now() - started) / 1000);
}

/** `concurrency` clients, each starting its next connection as soon as one ends, for `seconds`. */
export async function closedLoop(target: Target, concurrency: number, seconds: number): Promise<Summary> {
  const outcomes: Outcome[] = [];
  const payload = new TextEncoder().encode("x".repeat(64));
  const end = performance.now() + seconds * 1000;
  const lane = async () => {
    while (performance.now() < end) outcomes.push(await exchange(target, payload));
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, lane));
  return summarize(outcomes, (performance.now() - started) / 1000);
}

/** MB/s of `megabytes` echoed through one connection (sent and received at once). */
export async function transfer(target: Target, megabytes: number): Promise<{ ok: boolean; mbPerSecond: number }> {
  const payload = new Uint8Array(megabytes << 20);
  for (let i = 0; i < payload.length; i += 65536) crypto.getRandomValues(payload.subarray(i, i + 65536));
  // No CR or LF, so -c (which forces the copy loop) echoes it unchanged.
  for (let i = 0; i < payload.length; i++) if (payload[i] === 10 || payload[i] === 13) payload[i] = 32;
  const outcome = await exchange(target, payload, 120_000);
  return { ok: outcome.ok, mbPerSecond: megabytes / (outcome.ms / 1000) };
}
