// Reliability and security: integrity, load, faults, hostile
// clients, bad input, UNIX socket files, privileges, no shell injection.
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseCommandLine } from "../src/cli/parse.ts";
import { exchange, isAlive, run, startServer, tempDir, waitFor, workersOf, type Target } from "./harness.ts";

/** Streams `megabytes` of random bytes through the server; SHA-256 of what was sent and what came back. */
function hashedEcho(target: Target, megabytes: number): Promise<{ sent: string; received: string; bytes: number }> {
  const sent = new Bun.CryptoHasher("sha256");
  const received = new Bun.CryptoHasher("sha256");
  const block = new Uint8Array(1 << 20);
  let blocks = 0;
  let pending: Uint8Array = new Uint8Array(0);
  let bytes = 0;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`echo of ${megabytes} MB unfinished after 60 s`)), 60_000);
    const pump = (s: import("bun").Socket<undefined>) => {
      for (;;) {
        if (pending.length === 0) {
          if (blocks === megabytes) return void s.shutdown();
          crypto.getRandomValues(block.subarray(0, 65536)); // fresh bytes, cheaply: 64 KiB of each MiB
          sent.update(block);
          pending = block;
          blocks++;
        }
        const n = s.write(pending);
        if (n <= 0) return;
        pending = pending.subarray(n);
      }
    };
    const handlers = {
      open: pump,
      drain: pump,
      data: (_s: unknown, d: Buffer) => {
        received.update(d);
        bytes += d.length;
      },
      end: (s: import("bun").Socket<undefined>) => void s.end(),
      close: () => {
        clearTimeout(timer);
        resolve({ sent: sent.digest("hex"), received: received.digest("hex"), bytes });
      },
      error: (_s: unknown, e: Error) => reject(e),
    };
    const connecting = typeof target === "number"
      ? Bun.connect({ hostname: "127.0.0.1", port: target, socket: handlers, allowHalfOpen: true })
      : Bun.connect({ unix: target, socket: handlers });
    connecting.catch(reject);
  });
}

describe("integrity", () => {
  for (const [name, flags] of [
    ["no copy", []],
    // -q with --timeout is what still sends a worker's bytes through the copy loop.
    ["copy loop", ["-q", "--timeout", "30"]],
    ["--timeout watched through TCP_INFO, no copy", ["--timeout", "30"]],
  ] as const) {
    test(`100 MB of random bytes through -W 4 -p cat (${name}) come back with the same SHA-256`, async () => {
      await using server = await startServer([...flags, "-p", "cat", "-W", "4", "-s", "0"]);
      const { sent, received, bytes } = await hashedEcho(server.target, 100);
      expect(bytes).toBe(100 << 20);
      expect(received).toBe(sent);
    }, 90_000);
  }

  test("1,000 connections, 32 at a time, all byte-exact", async () => {
    await using server = await startServer(["-p", "cat", "-W", "4", "-s", "0"]);
    let next = 0;
    const bad: number[] = [];
    const lane = async () => {
      while (next < 1000) {
        const i = next++;
        const payload = `${i}|`.repeat(1 + (i % 300));
        const reply = await exchange(server.target, payload, { ms: 20_000 });
        if (reply.data.toString() !== payload) bad.push(i);
      }
    };
    await Promise.all(Array.from({ length: 32 }, lane));
    expect(bad).toEqual([]);
  }, 90_000);
});

describe("load", () => {
  test("a burst of 1,000 simultaneous connects with -W 8: every one served, none refused or reset", async () => {
    await using server = await startServer(["-p", "cat", "-W", "8", "-s", "0"]);
    await waitFor("8 workers", () => workersOf(server.proc.pid).length === 8);
    const results = await Promise.allSettled(
      Array.from({ length: 1000 }, (_, i) => exchange(server.target, `burst ${i}`, { ms: 60_000 })),
    );
    const failed = results.flatMap((r, i) =>
      r.status === "rejected" ? [`${i}: ${r.reason}`] : r.value.data.toString() === `burst ${i}` && r.value.ended === "closed" ? [] : [`${i}: ${r.value.ended}`],
    );
    expect(failed).toEqual([]);
  }, 90_000);
});

describe("faults", () => {
  test("SIGKILL to random workers under 16 clients: at most their connections fail, the pool is back within a second", async () => {
    await using server = await startServer(["-p", "cat", "-W", "4", "-s", "0"]);
    await waitFor("4 workers", () => workersOf(server.proc.pid).length === 4);
    let running = true;
    let failures = 0;
    let served = 0;
    const lane = async () => {
      for (let i = 0; running; i++) {
        const payload = `lane ${i} `.repeat(200);
        const reply = await exchange(server.target, payload, { ms: 10_000 }).catch(() => undefined);
        if (reply?.data.toString() === payload) served++;
        else failures++;
      }
    };
    const lanes = Array.from({ length: 16 }, lane);
    const killed: number[] = [];
    for (let k = 0; k < 5; k++) {
      await Bun.sleep(200); // the pace of the kills under load, not a wait for anything
      const workers = workersOf(server.proc.pid);
      const victim = workers[Math.floor(Math.random() * workers.length)];
      if (victim === undefined) continue;
      process.kill(victim, "SIGKILL");
      killed.push(victim);
      await waitFor("the pool back to 4", () => {
        const now = workersOf(server.proc.pid);
        return now.length === 4 && !now.includes(victim);
      }, 1000);
    }
    running = false;
    await Promise.all(lanes);
    expect(killed.length).toBe(5);
    expect(failures).toBeLessThanOrEqual(killed.length); // a worker holds one connection at most
    expect(served).toBeGreaterThan(50);
  }, 30_000);

  test("crashing, quitting, not reading and flooding programs cost their own connection only", async () => {
    const program =
      'read cmd; case "$cmd" in crash) kill -SEGV $$;; quit) exit 3;; noread) exec sleep 1;; flood) exec yes;; *) echo "ok $cmd";; esac';
    await using server = await startServer(["-p", program, "-W", "6", "-s", "0"]);
    await waitFor("6 workers", () => workersOf(server.proc.pid).length === 6);
    // The flooding one's client never reads: it holds its worker, and only that one.
    const flood = await Bun.connect({ hostname: "127.0.0.1", port: server.target as number, socket: { data() {} } });
    flood.write("flood\n");
    flood.pause();
    try {
      const bad = await Promise.all(["crash", "quit", "noread"].map((c) => exchange(server.target, `${c}\n`, { ms: 8000 })));
      for (const r of bad) expect(r.ended).toBe("closed");
      const good = await Promise.all([1, 2, 3].map((i) => exchange(server.target, `fine${i}\n`)));
      expect(good.map((r) => r.data.toString())).toEqual(["ok fine1\n", "ok fine2\n", "ok fine3\n"]);
      expect(isAlive(server.proc.pid)).toBe(true);
    } finally {
      flood.terminate();
    }
  }, 20_000);

  test("a client that resets mid-transfer does not disturb the others", async () => {
    await using server = await startServer(["-p", "cat", "-W", "4", "-s", "0"]);
    const accepted = () => server.stderr().match(/connection from/g)?.length ?? 0;
    const others = Promise.all([1, 2, 3].map((i) => exchange(server.target, `other ${i} `.repeat(100_000), { ms: 20_000 })));
    await waitFor("the others to be served", () => accepted() === 3);
    for (let i = 0; i < 5; i++) {
      const rude = await Bun.connect({ hostname: "127.0.0.1", port: server.target as number, socket: { data() {} } });
      rude.write("x".repeat(200_000));
      // Reset once a worker serves it: in the middle of its transfer.
      await waitFor("the rude client to be served", () => accepted() === 4 + i);
      rude.terminate(); // RST
    }
    const replies = await others;
    replies.forEach((r, i) => expect(r.data.toString()).toBe(`other ${i + 1} `.repeat(100_000)));
    expect((await exchange(server.target, "after")).data.toString()).toBe("after");
  }, 30_000);
});

describe("slow and hostile clients", () => {
  test("--timeout: a silent client and one that stops reading are cut off, and the worker is free again", async () => {
    await using silentServer = await startServer(["--timeout", "1", "-p", "cat", "-W", "1", "-s", "0"]);
    const silent = exchange(silentServer.target, "", { halfClose: false, ms: 5000 });
    // Closed in order: the worker's watch (no copy loop here) shuts the connection down, a FIN; only the copy loop resets.
    expect((await silent).ended).toBe("closed");
    expect((await exchange(silentServer.target, "next")).data.toString()).toBe("next");

    await using floodServer = await startServer(["--timeout", "1", "-p", "yes", "-W", "1", "-s", "0"]);
    const reader = await Bun.connect({
      hostname: "127.0.0.1",
      port: floodServer.target as number,
      socket: { data() {}, close() {} },
    });
    reader.pause(); // stops reading: the program's output backs up
    try {
      await waitFor("the stuck connection to be cut", () => floodServer.stderr().includes("connection timed out"), 5000);
      // With one worker, a new connection gets a fresh `yes` only if that worker is free again.
      let got = 0;
      const next = await Bun.connect({
        hostname: "127.0.0.1",
        port: floodServer.target as number,
        socket: { data: (_s, d) => void (got += d.length) },
      });
      try {
        await waitFor("output on a new connection", () => got > 0, 5000);
      } finally {
        next.terminate();
      }
    } finally {
      reader.terminate();
    }
  }, 20_000);

  test("without --timeout an idle client holds its worker, as with socket(1)", async () => {
    await using server = await startServer(["-p", "cat", "-W", "1", "-s", "0"]);
    const idle = await Bun.connect({ hostname: "127.0.0.1", port: server.target as number, socket: { data() {} } });
    try {
      const second = exchange(server.target, "waiting", { ms: 5000 });
      // A second in which nothing may happen: the behaviour under test.
      const early = await Promise.race([second.then(() => "served"), Bun.sleep(1000).then(() => "still waiting")]);
      expect(early).toBe("still waiting");
      idle.end();
      expect((await second).data.toString()).toBe("waiting");
    } finally {
      idle.terminate();
    }
  });
});

/** mulberry32: a tiny seeded PRNG, so a failing case can be replayed. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("bad input", () => {
  test("2,000 random and malformed argument lists: the parser only ever answers; the executable ends as it says, never with a stack trace", async () => {
    const random = prng(20261125);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)];
    const flags = ["-s", "-l", "-f", "-b", "-q", "-r", "-w", "-c", "-v", "-slf", "-rw", "-x", "-", "--", "-version", "--help", "--version", "--nope"];
    const valued = ["-p", "-B", "-W", "-u", "-g", "--max-requests", "--idle-timeout", "--ramp", "--grace", "--timeout", "--mode", "--program"];
    const values = ["cat", "", " ", "0", "-1", "4", "2:16", "16:2", "0:0", "99999999999", "1e3", "0.5", "nan", "::", "::1", "127.0.0.1", "localhost",
      "no.such.host.invalid", "nobody", "root", "nogroup", "spare", "burst", "777", "9", "ünïcödé", "$(touch /tmp/pwned-by-fuzz)", "/nonexistent/x.sock", "-p"];
    const operands = ["1", "0", "70000", "-5", "nntp", "nosuchservice", "127.0.0.1", "::1", "no.such.host.invalid", "/nonexistent/fuzz.sock", "./", "x/y"];
    // Every list goes through the parser here. The executable runs each list
    // the parser lets through, and up to three of each way it refuses one
    // (the values in quotes aside): the rest would take the same path.
    const runs: { args: string[]; said?: { exit: number; stderr: string } }[] = [];
    const seen = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      const args: string[] = [];
      for (let n = Math.floor(random() * 6); n > 0; n--) {
        if (random() < 0.5) args.push(pick(flags));
        else if (random() < 0.8) args.push(pick(valued), pick(values));
        else args.push(pick(valued)); // value missing
      }
      for (let n = Math.floor(random() * 4); n > 0; n--) args.push(pick(operands));
      // Anything that gets as far as binding must fail there, quickly: an address
      // that is not this machine's. (The last -B wins.)
      if (args.some((a) => /^-[a-zA-Z]*s/.test(a))) args.push("-B", "192.0.2.1");
      const parsed = parseCommandLine([...args], false);
      if ("run" in parsed) {
        runs.push({ args });
        continue;
      }
      const way = `${parsed.exit} ${parsed.help ?? ""} ${(parsed.stderr ?? "").replace(/'[^']*'/g, "'…'")}`;
      seen.set(way, (seen.get(way) ?? 0) + 1);
      if (seen.get(way)! <= 3) runs.push({ args, said: { exit: parsed.exit, stderr: parsed.stderr ?? "" } });
    }
    expect(seen.size).toBeGreaterThan(10);
    const problems: string[] = [];
    let next = 0;
    const lane = async () => {
      while (next < runs.length) {
        const { args, said } = runs[next++];
        const { status, stderr } = await run(args, { ms: 4000, env: { PATH: process.env.PATH ?? "" } });
        const lines = stderr.split("\n").filter(Boolean);
        const trace = /^\s+at |TypeError|ReferenceError|internal error|Bun v\d|error: /m.test(stderr);
        const other = said !== undefined && (status !== said.exit || stderr !== said.stderr);
        if (other || trace || status === 70 || status === 137 || (status !== 0 && lines.length === 0) || lines.length > 3) {
          problems.push(`${JSON.stringify(args)} -> ${status}: ${stderr.slice(0, 200)}`);
        }
      }
    };
    await Promise.all(Array.from({ length: 12 }, lane));
    expect(problems).toEqual([]);
    expect(existsSync("/tmp/pwned-by-fuzz")).toBe(false);
  }, 120_000);
});

const SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPIPE"] as const;

describe("UNIX socket files", () => {
  for (const kind of ["classic", "pool"] as const) {
    test(`${kind}: the path is removed at exit on every signal`, async () => {
      using dir = tempDir();
      // A pool's HUP, USR1 and USR2 reload, reopen and upgrade (reload.test.ts): they do not end it.
      for (const signal of SIGNALS.filter((s) => kind === "classic" || !["SIGHUP", "SIGUSR1", "SIGUSR2"].includes(s))) {
        const path = join(dir.path, `${signal}.sock`);
        const args = kind === "pool" ? ["-p", "cat", "-W", "2", "-s", path] : ["-s", "-l", "-p", "cat", path];
        await using server = await startServer(args);
        server.proc.kill(signal);
        await server.proc.exited;
        expect([signal, existsSync(path)]).toEqual([signal, false]);
      }
    }, 30_000);
  }

  test("--mode sets the socket file's permissions", async () => {
    using dir = tempDir();
    for (const mode of ["600", "660", "666"]) {
      const path = join(dir.path, `m${mode}.sock`);
      await using server = await startServer(["--mode", mode, "-s", "-l", "-p", "cat", path]);
      expect((statSync(path).mode & 0o777).toString(8)).toBe(mode);
      expect((await exchange(path, "m")).data.toString()).toBe("m");
    }
  });
});

const root = process.getuid?.() === 0;

function uidOf(name: string): number {
  const line = readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith(`${name}:`));
  return Number(line?.split(":")[2]);
}

describe("privileges", () => {
  test.skipIf(!root)("-u nobody -g nogroup: a port below 1024, and the program runs as nobody (classic and pool)", async () => {
    const nobody = uidOf("nobody");
    for (const extra of [["-s", "-l", "-f"], ["-W", "2", "-s"]]) {
      let port = 0;
      for (const candidate of [1023, 1022, 1021, 1020]) {
        const probe = await run(["-r", "127.0.0.1", String(candidate)], { ms: 1000 });
        if (probe.status === 111) {
          port = candidate; // refused: free
          break;
        }
      }
      expect(port).toBeGreaterThan(0);
      await using server = await startServer(["-u", "nobody", "-g", "nogroup", "-B", "127.0.0.1", "-p", "id -u; id -g", ...extra, String(port)]);
      const [uid, gid] = (await exchange(port, "")).data.toString().trim().split("\n").map(Number);
      expect(uid).toBe(nobody);
      expect(gid).not.toBe(0);
      for (const pid of [server.proc.pid, ...workersOf(server.proc.pid)]) {
        const uidLine = readFileSync(`/proc/${pid}/status`, "utf8").match(/^Uid:\s+(\d+)/m)?.[1];
        expect(Number(uidLine)).toBe(nobody);
      }
    }
  });
});

describe("no shell injection", () => {
  test("a peer's bytes and a path's metacharacters reach programs as values only", async () => {
    using dir = tempDir();
    const marker = join(dir.path, "pwned");
    const path = join(dir.path, "$(touch pwned)`touch pwned`.sock");
    await using server = await startServer(["-s", "-l", "-f", "-p", 'printf "%s\\n" "$UNIXLOCALPATH"; read x; echo "$x"', path]);
    const evil = `$(touch ${marker}); \`touch ${marker}\``;
    const reply = (await exchange(path, `${evil}\n`)).data.toString();
    expect(reply).toBe(`${path}\n${evil}\n`);
    await using cat = await startServer(["-p", "cat", "-W", "1", "-s", "0"]);
    expect((await exchange(cat.target, evil)).data.toString()).toBe(evil);
    expect(readdirSync(dir.path).filter((f) => f.includes("pwned") && !f.endsWith(".sock"))).toEqual([]);
    expect(existsSync(marker)).toBe(false);
    expect(existsSync(join(process.cwd(), "pwned"))).toBe(false); // the servers' own directory
  });
});
