// -b: socket(1) forked and detached. Bun cannot fork, so the daemon is the
// same executable started again in a new session (setsid), with any of
// fds 0-2 that is a terminal replaced by /dev/null; the command that
// started it returns at once with status 0.
import { isatty } from "./libc.ts";

const DAEMON_ENV = "SOCKET_DAEMON";

export function isDaemon(): boolean {
  return process.env[DAEMON_ENV] === "1";
}

export function daemonize(selfArgv: string[]): never {
  const keep = (fd: number) => (isatty(fd) ? "ignore" : fd);
  const child = Bun.spawn(selfArgv, {
    stdio: [keep(0), keep(1), keep(2)],
    env: { ...process.env, [DAEMON_ENV]: "1" },
    detached: true,
  });
  child.unref();
  process.exit(0);
}

/** In the daemon, once paths are resolved: cwd /, and programs must not see the marker. */
export function settleDaemon(): void {
  delete process.env[DAEMON_ENV];
  process.chdir("/");
}
