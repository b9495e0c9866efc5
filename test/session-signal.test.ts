// signalSession reaches every process of a program's session outside its
// process group: a child that made a group of its own (setpgid), and the
// orphan of a member that ended, which went to the subreaper. Called
// directly, with this test process as the subreaper (as a server is).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { signalSession } from "../src/system/reaper.ts";
import { becomeSubreaper, reap } from "../src/system/process.ts";
import { isAlive, pidWritten, tempDir, waitFor, writeExecutable } from "./harness.ts";

/** The parent pid from /proc/PID/stat; undefined once the process is gone. */
function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return undefined;
  }
}

/** Gone, or a zombie of ours (then reaped): the orphan's end as its subreaper sees it. */
function ended(pid: number): boolean {
  if (isAlive(pid)) return false;
  reap(pid);
  return true;
}

const GROUP_OF_ITS_OWN = `perl -e 'setpgrp(0, 0); exec "sleep", "300"' </dev/null >/dev/null 2>&1 &`;

/** A session leader (setsid) with a child in a group of its own and an orphan in one too. */
async function startSession(dir: string): Promise<{ leader: number; child: number; orphan: number; exited: Promise<number> }> {
  const script = writeExecutable(
    join(dir, "leader"),
    `#!/bin/sh\n${GROUP_OF_ITS_OWN}\necho $! > ${dir}/child.pid\n` +
      `sh -c '${GROUP_OF_ITS_OWN.replaceAll("'", "'\\''")} echo $! > ${dir}/orphan.pid'\n` +
      `echo $$ > ${dir}/leader.pid\nexec sleep 300\n`,
  );
  const proc = Bun.spawn(["setsid", script], { stdio: ["ignore", "ignore", "inherit"] });
  const leader = await pidWritten(dir, "leader.pid");
  const child = await pidWritten(dir, "child.pid");
  const orphan = await pidWritten(dir, "orphan.pid");
  await waitFor("the orphan to come to this process", () => parentOf(orphan) === process.pid);
  return { leader, child, orphan, exited: proc.exited };
}

describe("signalSession", () => {
  beforeAll(() => becomeSubreaper());
  afterAll(() => becomeSubreaper(false));

  test("KILL reaches the group, a child in a group of its own and an orphan of the session", async () => {
    using tmp = tempDir();
    const { leader, child, orphan, exited } = await startSession(tmp.path);
    try {
      expect(signalSession(leader, "SIGKILL")).toBe(true);
      await exited;
      await waitFor("the setpgid child and the orphan to end", () => ended(child) && ended(orphan));
    } finally {
      for (const pid of [leader, child, orphan]) if (isAlive(pid)) process.kill(pid, "SIGKILL");
    }
  });

  test("after the leader has ended, TERM still reaches what is left of its session; no group signal was sent", async () => {
    using tmp = tempDir();
    const { leader, child, orphan, exited } = await startSession(tmp.path);
    try {
      process.kill(leader, "SIGKILL");
      await exited;
      await waitFor("the setpgid child to come to this process", () => parentOf(child) === process.pid);
      expect(signalSession(leader, "SIGTERM")).toBe(false);
      await waitFor("the setpgid child and the orphan to end", () => ended(child) && ended(orphan));
    } finally {
      for (const pid of [child, orphan]) if (isAlive(pid)) process.kill(pid, "SIGKILL");
    }
  });
});
