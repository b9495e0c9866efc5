// PID 1 and subreaper. Programs may leave orphans (`sleep 9 &`);
// as a subreaper (or as PID 1) those become socket's children, and socket
// must reap them, as tini does, or they stay zombies. It must never reap a
// child Bun started itself (a worker, a program): Bun waits for those by
// pid, and their exit statuses matter. So every pid Bun.spawn returns is
// registered, and only others are reaped, one pid at a
// time with waitpid(pid, WNOHANG) — never waitpid(-1).
// So every module starts its children through `spawn` here, not Bun.spawn,
// and one that starts them itself (posix_spawn) registers each with `ownChild`.
// The same /proc walk finds everything socket started at shutdown: thanks to
// the subreaper, even a program that daemonized is still a descendant.
import { fs } from "./builtins.ts";
import { becomeSubreaper, peekEndedChild, reap, signal } from "./process.ts";
import { say } from "./log.ts";

import { errorText } from "../fatal.ts";

const ours = new Set<number>();
let installed = false;
/** Whether orphans come to this process (it is a subreaper), rather than to its parent's side. */
let adopting = false;

/** Bun.spawn, with the child registered as Bun's own: the reaper leaves it to Bun. */
export const spawn: typeof Bun.spawn = ((...args: Parameters<typeof Bun.spawn>) => {
  const proc = Bun.spawn(...args);
  ours.add(proc.pid);
  void proc.exited.finally(() => ours.delete(proc.pid));
  return proc;
}) as typeof Bun.spawn;

/**
 * A child started without Bun.spawn, reaped by its starter: the reaper
 * leaves it alone until `reaped` is called.
 */
export function ownChild(pid: number): { reaped(): void } {
  ours.add(pid);
  return { reaped: () => ours.delete(pid) };
}

interface Entry {
  pid: number;
  ppid: number;
  state: string;
  group: number;
  session: number;
}

/** An entry from /proc/PID/stat's text. */
function parseStat(pid: number, stat: string): Entry {
  // The command name may hold spaces and parentheses: fields start after the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ", 4);
  return { pid, ppid: Number(fields[1]), state: fields[0] ?? "", group: Number(fields[2]), session: Number(fields[3]) };
}

/** Every process visible in /proc: pid, parent, state letter, process group and session. */
function processTable(): Entry[] {
  const table: Entry[] = [];
  let names: string[];
  try {
    names = fs().readdirSync("/proc");
  } catch {
    return table; // no /proc: nothing to find, nothing to reap by scan
  }
  for (const name of names) {
    if (name.charCodeAt(0) > 57) continue; // not a pid
    const entry = entryOf(Number(name));
    if (entry) table.push(entry);
  }
  return table;
}

/** One process's entry; undefined once it has ended. */
function entryOf(pid: number): Entry | undefined {
  try {
    return parseStat(pid, fs().readFileSync(`/proc/${pid}/stat`, "latin1"));
  } catch {
    return undefined;
  }
}

/**
 * The children of every thread of `pid`: a child is listed under the
 * thread that forked it, an orphan under the thread that adopted it.
 */
function childrenOf(pid: number): number[] {
  const found: number[] = [];
  let tasks: string[];
  try {
    tasks = fs().readdirSync(`/proc/${pid}/task`);
  } catch {
    return found; // ended
  }
  for (const task of tasks) {
    try {
      for (const word of fs().readFileSync(`/proc/${pid}/task/${task}/children`, "latin1").split(" ")) if (word !== "") found.push(Number(word));
    } catch {
      // the thread ended meanwhile
    }
  }
  return found;
}

let childrenListed: boolean | undefined;

/** Whether the kernel lists children (CONFIG_PROC_CHILDREN); without it only a scan of every process finds them. */
function canListChildren(): boolean {
  childrenListed ??= fs().existsSync(`/proc/${process.pid}/task/${process.pid}/children`);
  return childrenListed;
}

/** Reaps every ended child that is not one of Bun's own. */
function reapOrphans(): void {
  const first = peekEndedChild();
  if (first === 0) return; // the common case: nothing ended, no scan
  if (!ours.has(first) && reap(first) && peekEndedChild() === 0) return;
  for (const { pid, ppid, state } of processTable()) {
    if (ppid === process.pid && state === "Z" && !ours.has(pid)) reap(pid);
  }
}

let scheduled = false;

/**
 * A master that handed over (USR2) adopts no more orphans. Its successor
 * may hand over in turn and exit while this one still drains: the newest
 * master, orphaned, would become this one's child, and this one's end
 * (endDescendants) would end it and the service with it.
 */
export function stopAdopting(): void {
  try {
    becomeSubreaper(false);
    adopting = false;
  } catch (e) {
    say(`cannot stop being a subreaper: ${errorText(e)}`);
  }
}

/**
 * Becomes a subreaper (a no-op in effect as PID 1, which is one already)
 * and reaps orphans on SIGCHLD. Signals coalesce, so each wakeup reaps all
 * (a child that ends during a reap raises SIGCHLD again). No timer: an idle
 * master sleeps. In the classic -f server each program raises SIGCHLD: the
 * delay makes a burst of them one scan.
 */
export function installReaper(): void {
  if (installed) return;
  installed = true;
  try {
    becomeSubreaper();
    adopting = true;
  } catch (e) {
    say(`cannot become a subreaper: ${errorText(e)}`);
  }
  process.on("SIGCHLD", () => {
    if (scheduled) return;
    scheduled = true;
    // Bun reaps its own children on its event loop: let it go first, so a
    // burst of connections costs one scan, not one each.
    setTimeout(() => {
      scheduled = false;
      reapOrphans();
    }, 20);
  });
}

/** Live (not zombie) descendants of this process, found through /proc; not `except` nor what it started. */
export function descendants(except?: number): number[] {
  const table = processTable().filter((e) => e.state !== "Z" && e.state !== "X");
  const children = new Map<number, number[]>();
  for (const e of table) {
    const list = children.get(e.ppid);
    if (list) list.push(e.pid);
    else children.set(e.ppid, [e.pid]);
  }
  const found: number[] = [];
  const walk = (pid: number) => {
    for (const child of children.get(pid) ?? []) {
      if (child === except) continue;
      found.push(child);
      walk(child);
    }
  };
  walk(process.pid);
  return found;
}

function signalAll(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/**
 * The live processes of the session `leader` leads, found by walking
 * down from it rather than reading every process on the machine, so the
 * cost follows the program's own tree: what its members started, and the
 * orphans of those that ended, which went to the subreaper (this process
 * as a server or master, else a pool worker's master: its parent).
 * Nothing outside the session has a descendant in it (a session is
 * inherited and can only be left), so the walk recurses into members only.
 */
function sessionMembers(leader: number): Entry[] {
  if (!canListChildren()) return processTable().filter((e) => e.session === leader && e.state !== "Z");
  const orphans = adopting ? childrenOf(process.pid) : [...childrenOf(process.pid), ...childrenOf(process.ppid)];
  const pending = [leader, ...orphans];
  const seen = new Set<number>();
  const members: Entry[] = [];
  for (let pid = pending.pop(); pid !== undefined; pid = pending.pop()) {
    if (seen.has(pid)) continue;
    seen.add(pid);
    const entry = entryOf(pid);
    if (entry?.session !== leader) continue;
    if (entry.state !== "Z") members.push(entry);
    pending.push(...childrenOf(pid));
  }
  return members;
}

/**
 * A signal to everything in the session `leader` leads (a program started
 * with setsid): its process group, and the groups its processes made of
 * their own (setpgid, as a shell's job control does) — those leave the
 * group, not the session, and must not outlive the program's end. While a
 * member lives the session's id cannot be another's. A TERM is followed
 * by CONT, as systemd does: a stopped process would not act on TERM until
 * the KILL. What called setsid again has left; only a cgroup holds that.
 * False when the group is gone (nothing was signalled by its id).
 */
export function signalSession(leader: number, name: NodeJS.Signals): boolean {
  // Found before any signal: a member that ends meanwhile hands its children to the subreaper, and a walk then may
  // find them under neither.
  const others = sessionMembers(leader).filter((e) => e.group !== leader);
  const sent = signal(leader, true, name);
  for (const { pid } of others) signal(pid, false, name);
  if (name === "SIGTERM") {
    if (sent) signal(leader, true, "SIGCONT");
    for (const { pid } of others) signal(pid, false, "SIGCONT");
  }
  return sent;
}

/** How long a process gets between TERM and KILL: at shutdown, and when --timeout ends a connection. */
export const KILL_AFTER_MS = 1000;

/**
 * The end of a shutdown: TERM to everything socket started that still
 * runs, KILL to what is left KILL_AFTER_MS later (re-walked, so what they
 * forked meanwhile goes too). Resolves with how many processes got TERM,
 * not counting `spare` (the pool's workers, which are not cut short).
 * `except`: a USR2 successor, which serves on with all it started.
 */
export async function endDescendants(spare: ReadonlySet<number> = new Set(), except?: number): Promise<number> {
  const running = descendants(except);
  if (running.length === 0) return 0;
  signalAll(running, "SIGTERM");
  const end = Date.now() + KILL_AFTER_MS;
  while (Date.now() < end && descendants(except).length > 0) await Bun.sleep(50);
  signalAll(descendants(except), "SIGKILL");
  return running.filter((pid) => !spare.has(pid)).length;
}

/** Resolves when no descendant runs any more, or after `ms`. */
export async function descendantsGone(ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end && descendants().length > 0) await Bun.sleep(50);
}
