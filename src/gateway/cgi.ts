// The CGI side of both gateways: the program's environment built from a
// request's variables, running the program, and what the web server gets
// when it cannot be run. Shared by SCGI and FastCGI.
import type { Subprocess } from "bun";
import { directProgram, type Program } from "../connection/program.ts";

/** A request variable as the web server sent it: name and value, decoded. */
export type Variable = [name: string, value: string];

/** Limits on a request's header (SCGI netstring, FastCGI PARAMS), and why. */
export const LIMITS = {
  /**
   * nginx sends at most a few KiB (its request headers must fit
   * large_client_header_buffers, 4 x 8 KiB by default); 64 KiB leaves room
   * for any real web server and bounds what a client can make a worker hold.
   */
  headerBytes: 64 * 1024,
  /** Far above the few dozen variables a web server sends; bounds the work per request. */
  variables: 1000,
};

/**
 * How long a connection may take to deliver its request header when
 * --timeout is not given: a client that connects and says nothing must not
 * hold a worker forever. Generous, as a web server sends its header at once.
 */
export const HEADER_TIMEOUT_MS = 30_000;

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Names that change how the dynamic loader, libc or a shell behave, or
 * where programs are found. A request must never set them: a client
 * talking SCGI or FastCGI directly could otherwise send LD_PRELOAD. Their
 * values come from socket's own environment.
 */
const DENIED = new Set([
  // glibc's "unsecure" list (dropped for setuid programs, for the same reason)
  "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
  "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR", "TZDIR",
  // shells
  "ENV", "BASH_ENV", "IFS", "CDPATH", "PS4", "SHELLOPTS", "BASHOPTS", "PATH",
  // httpoxy (CVE-2016-5385): a request's "Proxy:" header arrives as HTTP_PROXY,
  // which many HTTP libraries take as their proxy.
  "HTTP_PROXY",
]);
const DENIED_PREFIXES = ["LD_", "MALLOC_", "BASH_FUNC_"];

/** Whether a request may set this variable in the program's environment. */
export function allowedName(name: string): boolean {
  if (!NAME.test(name) || DENIED.has(name)) return false;
  return !DENIED_PREFIXES.some((p) => name.startsWith(p));
}

let inherited: Record<string, string> | undefined;

/**
 * The program's environment: socket's own (PATH and the like, read once),
 * then the request's allowed variables over it, and GATEWAY_INTERFACE
 * where the web server did not send it. socket's UCSPI variables are not
 * set: they would describe the web server's connection, not the client,
 * whose address the web server sends as REMOTE_ADDR.
 */
export function cgiEnvironment(variables: Variable[]): Record<string, string> {
  inherited ??= Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined));
  const env = { ...inherited };
  for (const [name, value] of variables) {
    // A NUL cannot be in an environment string (FastCGI values may hold one).
    if (allowedName(name) && !value.includes("\0")) env[name] = value;
  }
  env.GATEWAY_INTERFACE ??= "CGI/1.1";
  return env;
}

const programs = new Map<string, Program>();

/** The -p command's words, resolved once per process. */
export function cgiProgram(command: string): Program {
  let program = programs.get(command);
  if (!program) programs.set(command, (program = directProgram(command)));
  return program;
}

/** The CGI answer a web server turns into a 502 when the program cannot be run. */
export const BAD_GATEWAY = new TextEncoder().encode(
  "Status: 502 Bad Gateway\r\nContent-Type: text/plain\r\n\r\nThe gateway program could not be started.\n",
);

/**
 * Starts the program; when it cannot be executed (ENOENT, EACCES, ...)
 * says so on socket's own stderr, always (the operator must see it even
 * without -v), and returns undefined.
 */
export function spawnCgi<T extends Subprocess>(program: Program, start: () => T): T | undefined {
  try {
    return start();
  } catch (e) {
    const error = e as Error & { code?: string };
    const reason = error.code ? `${error.code}` : error.message;
    process.stderr.write(`socket: cannot run ${program.argv[0]}: ${describeSpawnError(reason)}\n`);
    return undefined;
  }
}

function describeSpawnError(code: string): string {
  switch (code) {
    case "ENOENT":
      return "no such file or directory, or its interpreter (#!) is missing (ENOENT)";
    case "EACCES":
      return "permission denied: not an executable file (EACCES)";
    default:
      return code;
  }
}
