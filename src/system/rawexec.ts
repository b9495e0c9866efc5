// A CGI environment value that is not UTF-8 (a request's bytes: cgit's
// caf\xe9.txt in PATH_INFO) cannot pass through Bun.spawn, which takes
// JavaScript strings and encodes them as UTF-8 (tested with Bun 1.4: a
// latin1 string's 0xE9 arrives as C3 A9, a Buffer or a lone surrogate as
// U+FFFD). So such a program is started as socket itself with this
// variable naming it: that process replaces itself (execve(2), same pid,
// same descriptors and directory) with the program, its environment
// carrying the bytes as they came. It costs a start of socket, only for
// requests that carry such bytes.
import { exec } from "./libc.ts";
import { say } from "./log.ts";

export const RAW_EXEC_ENV = "SOCKET_RAW_EXEC";

interface RawExec {
  path: string;
  argv: string[];
  /** Values as bytes, base64, by name; the rest of the environment is this process's own. */
  raw: Record<string, string>;
}

/** The environment and argv that start `path` through socket with `raw` values as bytes. */
export function rawExecEnv(path: string, argv: string[], raw: Map<string, Uint8Array>): string {
  const payload: RawExec = { path, argv, raw: Object.fromEntries([...raw].map(([n, v]) => [n, Buffer.from(v).toString("base64")])) };
  return JSON.stringify(payload);
}

/** In the process started so: becomes the program. Never returns (a failed execve ends it with 127, as sh does). */
export function rawExec(payload: string): never {
  const { path, argv, raw } = JSON.parse(payload) as RawExec;
  const env: Record<string, string | Uint8Array> = {};
  for (const [name, value] of Object.entries(process.env)) if (value !== undefined && name !== RAW_EXEC_ENV) env[name] = value;
  for (const [name, value] of Object.entries(raw)) env[name] = Buffer.from(value, "base64");
  try {
    exec(path, argv, env);
  } catch (e) {
    say(`cannot run ${path}: ${(e as Error).message}`);
  }
  process.exit(127);
}
