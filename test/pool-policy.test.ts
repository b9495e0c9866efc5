// The pool's policy as arithmetic (src/pool/policy.ts), how a worker's end is
// worded (src/pool/worker-process.ts), the worker's configuration check
// (src/pool/protocol.ts) and the readers of a caught value (src/fatal.ts):
// pure functions, imported and called directly.
import { describe, expect, test } from "bun:test";
import { errorCode, errorNumber, errorText, Fatal } from "../src/fatal.ts";
import type { PoolPolicy } from "../src/options.ts";
import { exitKind, idleTooLong, oneToRemove, STARTS_AT_ONCE, startsWanted } from "../src/pool/policy.ts";
import { EXIT_LISTENER_FAILED, EXIT_MAX_REQUESTS, EXIT_RETIRED, EXIT_START_FAILED, readWorkerConfig } from "../src/pool/protocol.ts";
import { endReason } from "../src/pool/worker-process.ts";

const policy = (min: number, max: number, ramp: "spare" | "burst" = "spare"): PoolPolicy => ({
  min,
  max,
  ramp,
  maxRequests: 0,
  idleTimeoutMs: 10_000,
  graceMs: 10_000,
  prestart: false,
});

describe("how many workers start", () => {
  test("an empty pool starts up to MIN, no more at once than the cores", () => {
    expect(startsWanted(policy(1, 1), { active: 0, starting: 0, idle: 0 })).toBe(1);
    expect(startsWanted(policy(64, 64), { active: 0, starting: 0, idle: 0 })).toBe(Math.min(64, STARTS_AT_ONCE));
    // Those starting count against the cores: the rest follow as each says it waits.
    expect(startsWanted(policy(64, 64), { active: STARTS_AT_ONCE, starting: STARTS_AT_ONCE, idle: 0 })).toBe(0);
  });

  test("a full fixed pool starts nothing", () => {
    expect(startsWanted(policy(4, 4), { active: 4, starting: 0, idle: 0 })).toBe(0);
    expect(startsWanted(policy(4, 4), { active: 4, starting: 0, idle: 4 })).toBe(0);
  });

  test("MIN:MAX with every worker busy: one spare, or all up to MAX with --ramp burst", () => {
    expect(startsWanted(policy(2, 8), { active: 2, starting: 0, idle: 0 })).toBe(1);
    expect(startsWanted(policy(2, 8, "burst"), { active: 2, starting: 0, idle: 0 })).toBe(6);
    // One idle or starting is the spare already; at MAX nothing more.
    expect(startsWanted(policy(2, 8), { active: 3, starting: 0, idle: 1 })).toBe(0);
    expect(startsWanted(policy(2, 8), { active: 3, starting: 1, idle: 0 })).toBe(0);
    expect(startsWanted(policy(2, 8), { active: 8, starting: 0, idle: 0 })).toBe(0);
  });
});

describe("which worker goes", () => {
  test("--idle-timeout retires one idle past it, only above MIN", () => {
    const now = 100_000;
    const workers = [
      { state: "busy" as const, idleSince: 0 },
      { state: "idle" as const, idleSince: now - 5_000 },
      { state: "idle" as const, idleSince: now - 20_000 },
    ];
    expect(idleTooLong(workers, policy(1, 4), now)).toBe(workers[2]);
    expect(idleTooLong(workers, policy(3, 4), now)).toBeUndefined();
    expect(idleTooLong(workers.slice(0, 2), policy(1, 4), now)).toBeUndefined();
  });

  test("TTOU takes an idle worker when states are known, else one starting, else the first", () => {
    const busy = { state: "busy" as const };
    const idle = { state: "idle" as const };
    const starting = { state: "starting" as const };
    expect(oneToRemove([busy, starting, idle], true)).toBe(idle);
    expect(oneToRemove([busy, starting, idle], false)).toBe(starting);
    expect(oneToRemove([busy, idle], false)).toBe(busy);
  });
});

describe("how a worker's end counts", () => {
  const worker = { state: "idle" as const, retiring: false, served: 0, startedAt: 1_000 };

  test("a death soon after start, having served nothing, is a failure at once", () => {
    expect(exitKind(worker, 1, 1_500)).toEqual({ setUpFailed: false, failedAtOnce: true });
    expect(exitKind(worker, 1, 5_000)).toEqual({ setUpFailed: false, failedAtOnce: false });
    expect(exitKind({ ...worker, served: 3 }, 1, 1_500).failedAtOnce).toBe(false);
  });

  test("an end by policy is never a failure", () => {
    for (const code of [EXIT_MAX_REQUESTS, EXIT_RETIRED]) expect(exitKind(worker, code, 1_500).failedAtOnce).toBe(false);
    expect(exitKind({ ...worker, retiring: true }, 1, 1_500).failedAtOnce).toBe(false);
  });

  test("a worker that could not set itself up failed at once, however long it took", () => {
    expect(exitKind({ ...worker, state: "starting" }, EXIT_START_FAILED, 60_000)).toEqual({ setUpFailed: true, failedAtOnce: true });
  });

  test("each exit is worded for the operator's line", () => {
    expect(endReason(null, "SIGKILL")).toBe("killed by SIGKILL");
    expect(endReason(EXIT_MAX_REQUESTS, null)).toBe("served its --max-requests");
    expect(endReason(EXIT_RETIRED, null)).toBe("retired");
    expect(endReason(EXIT_LISTENER_FAILED, null)).toBe("could not accept");
    expect(endReason(EXIT_START_FAILED, null)).toBe("could not set itself up");
    expect(endReason(1, null)).toBe("failed (exit 1)");
  });
});

describe("a worker's configuration", () => {
  test("anything but a pool's configuration is one Fatal naming the field, never a TypeError", () => {
    const address = { kind: "inet", ip: "127.0.0.1", family: 4, port: 80 };
    const good = { options: { pool: {} }, address, masterPid: 1 };
    expect(readWorkerConfig(JSON.stringify(good)).masterPid).toBe(1);
    const bad: [string, string][] = [
      ["{", "not JSON"],
      ["null", "not an object"],
      ["3", "not an object"],
      [JSON.stringify({ ...good, options: { pool: null } }), "options"],
      [JSON.stringify({ ...good, address: { kind: "inet", ip: 1 } }), "address"],
      [JSON.stringify({ ...good, masterPid: "1" }), "masterPid"],
      [JSON.stringify({ ...good, logFile: 3 }), "logFile"],
      [JSON.stringify({ ...good, stderrFd: 2.5 }), "stderrFd"],
    ];
    for (const [text, why] of bad) {
      let thrown: unknown;
      try {
        readWorkerConfig(text);
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(Fatal);
      expect(errorText(thrown)).toBe(`worker: malformed configuration from the master (${why})`);
    }
  });
});

describe("reading a caught value", () => {
  test("an Error's message, a code and an errno when they are there, text otherwise", () => {
    const e = Object.assign(new Error("open failed"), { code: "ENOENT", errno: -2 });
    expect(errorText(e)).toBe("open failed");
    expect(errorCode(e)).toBe("ENOENT");
    expect(errorNumber(e)).toBe(-2);
    expect(errorText("plain")).toBe("plain");
    for (const odd of [undefined, null, 7, { code: 7, errno: "2" }]) {
      expect(errorCode(odd)).toBeUndefined();
      expect(errorNumber(odd)).toBeUndefined();
    }
  });
});
