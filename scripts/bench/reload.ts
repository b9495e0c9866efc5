// Reload and upgrade under load (issue 16): `socket -W 4` serving `cat`
// under a closed loop of 8 clients (each reply checked byte for byte), in
// three windows of RELOAD_S seconds: steady state, a HUP, a USR2 (the same
// executable put in place again). The HUP and USR2 rows count only the
// connections begun between the signal and the moment it is done (every
// worker replaced; the old master gone), so their p99 is that of the
// reload itself, not diluted by the steady seconds around it.
import { readFileSync } from "node:fs";
import { QUICK, log } from "./config.ts";
import { exchange, REQUEST, summarize, type Outcome, type Summary } from "./loadgen.ts";
import { tree } from "./measure.ts";
import { connectionContenders, start, stop, W4, type Bench } from "./scenarios.ts";

const RELOAD_S = QUICK ? 2 : 4;
/** When, into its window, the signal is sent: the loop is at full speed by then. */
const SIGNAL_AT_MS = 500;

export interface ReloadRow {
  name: string;
  summary: Summary;
  /** Signal to done (every worker replaced, or the old master gone), in ms. */
  doneMs?: number;
}

type Timed = Outcome & { at: number };

/** 8 clients for `seconds`; each outcome keeps when its connection began. */
async function timedLoop(port: number, seconds: number): Promise<{ outcomes: Timed[]; seconds: number }> {
  const outcomes: Timed[] = [];
  const started = performance.now();
  const end = started + seconds * 1000;
  const lane = async () => {
    while (performance.now() < end) {
      const at = performance.now();
      outcomes.push({ ...(await exchange({ port }, REQUEST)), at });
    }
  };
  await Promise.all(Array.from({ length: 8 }, lane));
  return { outcomes, seconds: (performance.now() - started) / 1000 };
}

/** A master's workers: its children running with --pool-worker. */
function workersOf(master: number): number[] {
  return tree(master).filter((pid) => {
    if (pid === master) return false;
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("--pool-worker");
    } catch {
      return false;
    }
  });
}

async function until(check: () => boolean, ms = 15_000): Promise<void> {
  const end = performance.now() + ms;
  while (!check() && performance.now() < end) await Bun.sleep(2);
}

/** One window with `signal` sent SIGNAL_AT_MS in; `done` says when its work is over. */
async function during(port: number, name: string, signal: () => void, done: () => boolean): Promise<ReloadRow> {
  const loop = timedLoop(port, RELOAD_S);
  await Bun.sleep(SIGNAL_AT_MS);
  const sent = performance.now();
  signal();
  await until(done);
  const finished = performance.now();
  const { outcomes } = await loop;
  const inside = outcomes.filter((o) => o.at >= sent && o.at <= finished);
  return { name, summary: summarize([{ outcomes: inside, seconds: (finished - sent) / 1000 }]), doneMs: finished - sent };
}

export async function reloadScenario(b: Bench): Promise<{ rows?: ReloadRow[]; note?: string }> {
  const contender = connectionContenders(b).find((c) => c.name === W4)!;
  const help = Bun.spawnSync([b.socket, "--help"]).stdout.toString();
  if (!/HUP +reload/.test(help)) return { note: "not supported by this build (no pool signals in socket --help)" };
  log(`reload: ${W4} at 8 at a time, ${RELOAD_S} s steady, then a HUP, then a USR2`);
  const server = await start(contender);
  try {
    const master = server.proc.pid;
    const steady = await timedLoop(server.port, RELOAD_S);
    const rows: ReloadRow[] = [{ name: "steady state", summary: summarize([steady]) }];
    const old = workersOf(master);
    rows.push(
      await during(server.port, "during a HUP (every worker replaced)", () => process.kill(master, "SIGHUP"), () => {
        const now = workersOf(master);
        return now.length === 4 && now.every((pid) => !old.includes(pid));
      }),
    );
    let gone = false;
    void server.proc.exited.then(() => (gone = true));
    rows.push(await during(server.port, "during a USR2 (a new master takes over)", () => process.kill(master, "SIGUSR2"), () => gone));
    return { rows };
  } finally {
    await stop(server); // the successor is in the old master's process group: it goes too
  }
}
