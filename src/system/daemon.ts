// -b: socket(1) forked and detached. Bun cannot fork, so the daemon is the
// same executable started again in a new session (setsid), with stdin on
// /dev/null and stdout and stderr on /dev/null or the --log file: nothing
// of the caller's is kept, so `socket -b ... | cat` and ssh return. The
// caller waits, over a socket pair, until the daemon serves or fails, and then
// exits with 0 or with the daemon's Fatal line and status: a bind error
// reaches the caller's stderr as it would without -b.
import { say, write } from "./log.ts";
import { fs } from "./builtins.ts";
import { Fatal } from "../fatal.ts";
import { socketPair } from "./connect.ts";
import { close, dup2, dupCloexec, setCloexec } from "./fd.ts";
import { strerror } from "./ffi.ts";
import { sendAll } from "./socket.ts";
import { geteuid } from "./users.ts";
import { atExit } from "./signals.ts";
import { spawn } from "./reaper.ts";

import { errorCode, errorNumber, errorText } from "../fatal.ts";
import { nodePath } from "./builtins.ts";

const DAEMON_ENV = "SOCKET_DAEMON";
/**
 * The daemon's end of the report channel, by number. A socket pair, not a
 * pipe: the daemon writes with MSG_NOSIGNAL, so a caller killed meanwhile
 * (Ctrl-C) costs it no SIGPIPE, which would end it.
 */
const REPORT_ENV = "SOCKET_DAEMON_REPORT";
const REPORT_FD = 3;

let reportFd: number | undefined;
let pidFile: string | undefined;

export function isDaemon(): boolean {
  return process.env[DAEMON_ENV] === "1";
}

/** Reads the daemon's report until it says something or ends. */
function readReport(fd: number): string {
  const chunks: Buffer[] = [];
  const buffer = Buffer.alloc(4096);
  for (;;) {
    let n: number;
    try {
      n = fs().readSync(fd, buffer, 0, buffer.length, null);
    } catch (e) {
      if (errorCode(e) === "EAGAIN" || errorCode(e) === "EINTR") continue;
      break;
    }
    if (n <= 0) break;
    chunks.push(Buffer.from(buffer.subarray(0, n)));
  }
  return Buffer.concat(chunks).toString();
}

/** How --log is opened: appended to, created if need be, never through a symlink (root would append to wherever it points). */
const logFlags = (): number => {
  const { O_WRONLY, O_APPEND, O_CREAT, O_NOFOLLOW } = fs().constants;
  return O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW;
};

let logFile: string | undefined;

/** -b --log FILE: remembered as an absolute path, before the daemon changes directory (USR1 reopens it). */
export function setLogFile(path: string | undefined): void {
  logFile = path === undefined ? undefined : nodePath().resolve(path);
}

export function logFileName(): string | undefined {
  return logFile;
}

/**
 * USR1 (logrotate's convention): the log is opened again at its path, with
 * the flags it was first opened with, onto stdout and stderr; what was
 * there (the file logrotate moved away) is closed. Throws a Fatal saying why.
 */
export function reopenLog(path: string): void {
  let fd: number;
  try {
    fd = fs().openSync(path, logFlags(), 0o644);
  } catch (e) {
    throw new Fatal(`--log ${path}: ${reason(e)}`, 1);
  }
  try {
    dup2(fd, 1);
    dup2(fd, 2);
  } finally {
    fs().closeSync(fd);
  }
}

/** The caller's side of -b: start the daemon, wait for its word, exit with it. */
export function daemonize(selfArgv: string[], logFile: string | undefined): never {
  let out: number | "ignore" = "ignore";
  if (logFile !== undefined) {
    try {
      out = fs().openSync(logFile, logFlags(), 0o644);
    } catch (e) {
      throw new Fatal(`--log ${logFile}: ${reason(e)}`, 1);
    }
  }
  const [readEnd, writeEnd] = socketPair();
  const child = spawn(selfArgv, {
    argv0: process.execPath, // for ps, as it was started; what runs is selfArgv's (system/self.ts imageCommand)
    stdio: ["ignore", out, out, writeEnd],
    env: { ...process.env, [DAEMON_ENV]: "1", [REPORT_ENV]: String(REPORT_FD) },
    detached: true,
  });
  child.unref();
  close(writeEnd); // else our own copy would keep the channel open after the daemon's is gone
  if (typeof out === "number") fs().closeSync(out);
  const report = readReport(readEnd);
  if (report.startsWith("ready\n")) process.exit(0);
  const fatal = report.match(/^fatal (\d+)\n([\s\S]*)$/);
  if (fatal) {
    write(fatal[2]);
    process.exit(Number(fatal[1]));
  }
  say(`the daemon ended before it served${logFile ? ` (see ${logFile})` : ""}`);
  process.exit(1);
}

/**
 * In the daemon, once paths are resolved: cwd /, the report channel kept
 * from programs, and the markers out of the environment.
 */
export function settleDaemon(): void {
  const fd = Number(process.env[REPORT_ENV]);
  delete process.env[DAEMON_ENV];
  delete process.env[REPORT_ENV];
  if (fd === REPORT_FD) {
    try {
      setCloexec(fd); // a program holding it would keep the caller waiting
      reportFd = fd;
    } catch {
      // not open: started by hand with the marker; nobody to report to
    }
  }
  process.chdir("/");
}

function sendReport(text: string): void {
  if (reportFd === undefined) return;
  try {
    sendAll(reportFd, text);
  } catch {
    // the caller is gone (killed): nobody to tell
  }
  close(reportFd);
  reportFd = undefined;
}

/** Tells the caller the daemon serves: it exits 0. */
export function reportReady(): void {
  sendReport("ready\n");
}

/** Tells the caller why the daemon ends before serving: it prints `text` and exits with `status`. */
export function reportFatal(text: string, status: number): void {
  sendReport(`fatal ${status}\n${text}`);
}

/** --pid-file: remembered as an absolute path, before -b changes directory. */
export function setPidFile(path: string | undefined): void {
  pidFile = path === undefined ? undefined : nodePath().resolve(path);
}

let pidFd: number | undefined;

/**
 * USR2: the old master's open pid file, handed to its successor as this
 * descriptor (named by PID_FD_ENV): after -u the successor could not open
 * a pid file root made in /run.
 */
export const PID_FD_ENV = "SOCKET_PID_FD";
export const SUCCESSOR_PID_FD = 4;

/** Set once a USR2 successor serves: the pid file is its now, to leave as it is at exit. */
let pidFileHandedOver = false;

export function handOverPidFile(): void {
  pidFileHandedOver = true;
}

/** The pid file's descriptor, for a USR2 successor. */
export function pidFileDescriptor(): number | undefined {
  return pidFd;
}

/** Node's "EACCES: permission denied, open '/x'" as libc says it. */
function reason(e: unknown): string {
  const errno = errorNumber(e);
  return errorCode(e) && errno !== undefined ? strerror(Math.abs(errno)) : errorText(e);
}

const ELOOP = 40;

/**
 * The pid file, as root, in a directory others may write: created new
 * (O_EXCL), or else reused only if it is a plain file of socket's own user
 * with no other name (a stale pid file); never a symlink (O_NOFOLLOW), a
 * FIFO, a device, or somebody else's file, which would be truncated.
 */
function openOwnPidFile(path: string, keep: boolean): number {
  const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } = fs().constants;
  try {
    return fs().openSync(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o644);
  } catch (e) {
    if (errorCode(e) !== "EEXIST") throw e;
  }
  const seen = fs().lstatSync(path);
  if (seen.isSymbolicLink()) throw new Fatal(`--pid-file ${path}: ${strerror(ELOOP)}`, 1);
  if (!seen.isFile()) throw new Fatal(`--pid-file ${path}: not a regular file`, 1);
  // O_NONBLOCK: a FIFO swapped in since the lstat must not block the open.
  const fd = fs().openSync(path, O_WRONLY | O_NOFOLLOW | O_NONBLOCK);
  try {
    const stat = fs().fstatSync(fd);
    if (!stat.isFile() || stat.ino !== seen.ino || stat.dev !== seen.dev) throw new Fatal(`--pid-file ${path}: not a regular file`, 1);
    if (stat.uid !== geteuid()) throw new Fatal(`--pid-file ${path}: exists and belongs to uid ${stat.uid}; not overwriting it`, 1);
    if (stat.nlink !== 1) throw new Fatal(`--pid-file ${path}: exists with other hard links; not overwriting it`, 1);
    if (!keep) fs().ftruncateSync(fd, 0);
    return fd;
  } catch (e) {
    fs().closeSync(fd);
    throw e;
  }
}

/**
 * Opens the pid file right after binding, before -u/-g drop privileges
 * (pid files live in root's /run): the file is created then, and filled
 * with the pid only once socket serves. `keep`: USR2's new master leaves
 * the old master's pid there until it serves itself.
 */
export function openPidFile(keep = false): void {
  const handed = process.env[PID_FD_ENV];
  delete process.env[PID_FD_ENV];
  if (pidFile === undefined) return;
  try {
    if (keep && handed === String(SUCCESSOR_PID_FD)) {
      pidFd = dupCloexec(SUCCESSOR_PID_FD); // programs must not inherit it
      close(SUCCESSOR_PID_FD);
    } else {
      pidFd = openOwnPidFile(pidFile, keep);
    }
  } catch (e) {
    if (e instanceof Fatal) throw e;
    throw new Fatal(`--pid-file ${pidFile}: ${reason(e)}`, 1);
  }
  const [path, fd] = [pidFile, pidFd];
  atExit(() => {
    if (pidFileHandedOver) return;
    try {
      // Only our own file, still naming us (or nobody: socket ends before it
      // served, as when no pool worker can start): not one put there since.
      const [ours, there] = [fs().fstatSync(fd), fs().lstatSync(path)];
      const names = fs().readFileSync(path, "utf8").trim();
      if (ours.ino === there.ino && ours.dev === there.dev && (names === String(process.pid) || names === "")) fs().unlinkSync(path);
    } catch {
      // no longer allowed to unlink it (-u): at least it names nobody
      fs().ftruncateSync(fd, 0);
    }
  });
}

/** Writes the pid (socket serves); the file goes when socket ends, if it still names us. */
export function writePidFile(): void {
  if (pidFd === undefined) return;
  try {
    // From the start: a USR2 master replaces the old master's pid, which it kept until now.
    fs().ftruncateSync(pidFd, 0);
    fs().writeSync(pidFd, `${process.pid}\n`, 0);
  } catch (e) {
    throw new Fatal(`--pid-file ${pidFile}: ${reason(e)}`, 1);
  }
}
