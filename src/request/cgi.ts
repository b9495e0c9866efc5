// The CGI side of both gateways, without I/O: a request's variables as
// every part reads them, from them to what runs (prepareCgi: the program,
// its directory and environment) or the answer the web server gets when
// nothing runs, and the limits on a request. Shared by SCGI and FastCGI;
// gateway/cgi-process.ts starts what it says.
import type { Program } from "../connection/command.ts";
import type { Gateway } from "../options.ts";
import { say, verbose, warn } from "../system/log.ts";
import { nodePath } from "../system/builtins.ts";

// A request's variables: one list, one value per name, and each value's
// bytes as the web server sent them. The program a request names and the
// environment it gets are read from the same list, so they cannot disagree
// about which of two values counts.

/**
 * A request variable as the web server sent it: name and value, decoded;
 * `raw`: the value's bytes, when they are not UTF-8 (the value then has
 * U+FFFD for them, for socket's own use; the program gets the bytes).
 */
export type Variable = [name: string, value: string, raw?: Uint8Array];

const strict = new TextDecoder("utf-8", { fatal: true });
const lossy = new TextDecoder();
const encoder = new TextEncoder();

/** A pair's value from the wire: decoded, with its bytes kept when they are not UTF-8. */
export function variable(name: string, bytes: Uint8Array): Variable {
  try {
    return [name, strict.decode(bytes)];
  } catch {
    return [name, lossy.decode(bytes), bytes.slice()];
  }
}

/** A variable's value as bytes: the ones it came as. */
export function bytesOf([, value, raw]: Variable): Uint8Array {
  return raw ?? encoder.encode(value);
}

/**
 * One value per name, the last one sent, where the first sent stood.
 * FastCGI lets PARAMS repeat a name; php-fpm keeps the last, and nginx
 * users rely on it: a `fastcgi_param` after `include fastcgi_params`
 * overrides the included one. (SCGI's spec forbids a repeated name: scgi-header.ts
 * refuses the request instead.)
 */
export function lastValueEach(variables: readonly Variable[]): Variable[] {
  const byName = new Map<string, Variable>();
  for (const v of variables) byName.set(v[0], v);
  return byName.size === variables.length ? [...variables] : [...byName.values()];
}

/** The value of `name` in a list of one value per name. */
export function valueOf(variables: readonly Variable[], name: string): string | undefined {
  return variables.find(([n]) => n === name)?.[1];
}

/** -v: why a gateway connection was closed (bad request, timeout, ...), named by its protocol. */
export function gatewayLog(options: { verbose: boolean }, protocol: Gateway, line: string): void {
  verbose(options, `${protocol}: ${line}`);
}

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

/** The answer to a body over --max-body. */
export const TOO_LARGE = new TextEncoder().encode("Status: 413 Payload Too Large\r\nContent-Type: text/plain\r\n\r\n413 Payload Too Large\n");
/** The answer to a body the server cannot hold now (the bodies on disk at their limit). */
export const UNAVAILABLE = new TextEncoder().encode("Status: 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\n503 Service Unavailable\n");

/**
 * --max-body, the one rule for SCGI and both FastCGI engines: the -v line
 * refusing a body of `size` bytes, or undefined within the limit.
 * "declared": CONTENT_LENGTH, known before the body (413, the CGI does not
 * run); "received": what has come so far of a body.
 */
export function bodyOverLimit(options: { maxBody: number }, size: number, how: "declared" | "received"): string | undefined {
  if (size <= options.maxBody) return undefined;
  return how === "declared"
    ? `413: a body of ${size} bytes is over --max-body (${options.maxBody} bytes)`
    : `413: a body past --max-body (${options.maxBody} bytes)`;
}

/**
 * How long a connection may take to deliver its request header when
 * --timeout is not given: a client that connects and says nothing must not
 * hold a worker forever. Generous, as a web server sends its header at once.
 */
export const HEADER_TIMEOUT_MS = 30_000;

/**
 * The least rate a request's body must come at once its first
 * HEADER_TIMEOUT_MS (or --timeout) has passed, in bytes a second: a second
 * more for every this many bytes, as Apache's mod_reqtimeout's MinRate.
 * A web server relays a body at its own client's pace, far above this.
 */
export const MIN_BODY_RATE = 500;

/**
 * When a body begun at `from` must have come, `received` bytes of it so
 * far, the last at `lastAt`: its first `limitMs` (--timeout, or
 * HEADER_TIMEOUT_MS), then a second more for every MIN_BODY_RATE bytes
 * that came (as Apache's mod_reqtimeout: body=20,MinRate=500), and never
 * more than `limitMs` without a byte (as nginx's client_body_timeout): the
 * rate alone let a client that sent 99 MB of 100 at once stop for 58
 * hours. The one rule, for every engine.
 */
export function bodyDue(from: number, limitMs: number, received: number, lastAt: number): number {
  return Math.min(from + limitMs + (received * 1000) / MIN_BODY_RATE, lastAt + limitMs);
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** A header line's name as every web server makes it: upper case, "-" as "_" (RFC 3875 section 4.1.18). */
const HEADER_NAME = /^HTTP_[A-Z0-9_]+$/;

/**
 * The variables a request may set, and the only ones: a client that talks
 * SCGI or FastCGI to the port directly (bypassing the web server) must not
 * choose the environment of the program (PERL5OPT, NODE_OPTIONS, LD_PRELOAD,
 * http_proxy, ... steer the program itself). A name ending in "*" is a prefix.
 * The same list is in the man page (docs/socket.1, ENVIRONMENT).
 *
 * - The CGI/1.1 meta-variables (RFC 3875 section 4.1).
 * - What nginx's fastcgi_params and scgi_params and Apache's
 *   ap_add_common_vars/ap_add_cgi_vars (mod_proxy_fcgi, mod_proxy_scgi)
 *   send with every request: REQUEST_URI ... SERVER_SIGNATURE, and SCGI,
 *   which the SCGI protocol requires in every request.
 * - mod_ssl's variables by name and prefix, not "SSL_*": OpenSSL itself reads
 *   SSL_CERT_FILE and SSL_CERT_DIR.
 * Left out on purpose: the PATH Apache sends (the program's PATH is socket's),
 * Apache's REDIRECT_URL and REDIRECT_QUERY_STRING (only after an internal
 * redirect) and UNIQUE_ID (a module's): --pass-env lets them through.
 */
const REQUEST_VARIABLES = [
  // RFC 3875 section 4.1
  "AUTH_TYPE", "CONTENT_LENGTH", "CONTENT_TYPE", "GATEWAY_INTERFACE", "PATH_INFO", "PATH_TRANSLATED",
  "QUERY_STRING", "REMOTE_ADDR", "REMOTE_HOST", "REMOTE_IDENT", "REMOTE_USER", "REQUEST_METHOD",
  "SCRIPT_NAME", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE",
  // the request's header lines (RFC 3875 section 4.1.18); requestMaySet refuses HTTP_PROXY
  "HTTP_*",
  // nginx's and Apache's extensions
  "HTTPS", "REQUEST_URI", "REQUEST_SCHEME", "SCRIPT_FILENAME", "DOCUMENT_ROOT", "DOCUMENT_URI",
  "REDIRECT_STATUS", "SERVER_ADDR", "REMOTE_PORT", "SERVER_ADMIN", "SERVER_SIGNATURE", "CONTEXT_*", "SCGI",
  // mod_ssl (SSLOptions +StdEnvVars +ExportCertData), and the same names set by hand in nginx
  "SSL_PROTOCOL", "SSL_SESSION_ID", "SSL_SESSION_RESUMED", "SSL_SECURE_RENEG", "SSL_COMPRESS_METHOD",
  "SSL_CIPHER", "SSL_CIPHER_*", "SSL_VERSION_INTERFACE", "SSL_VERSION_LIBRARY", "SSL_TLS_SNI",
  "SSL_SRP_USER", "SSL_SRP_USERINFO", "SSL_HANDSHAKE_RTT", "SSL_CLIENT_*", "SSL_SERVER_*",
];
const NAMES = new Set(REQUEST_VARIABLES.filter((n) => !n.endsWith("*")));
const PREFIXES = REQUEST_VARIABLES.filter((n) => n.endsWith("*")).map((n) => n.slice(0, -1));

/** A name of the table above: a request's to set, never socket's own environment's. */
function requestVariable(name: string): boolean {
  return NAMES.has(name) || PREFIXES.some((p) => name.length > p.length && name.startsWith(p));
}

/**
 * Whether a request may set `name`: the table above or --pass-env, never
 * HTTP_PROXY in any case (httpoxy: a "Proxy:" header line would become the
 * program's outbound proxy; Python's urllib takes *_proxy in any case), and
 * a header line (HTTP_*) only as a web server names it, upper case, so that
 * no other spelling of a header reaches the program.
 */
export function requestMaySet(name: string, passed: ReadonlySet<string>): boolean {
  if (name.length === 10 && name.toUpperCase() === "HTTP_PROXY") return false;
  if (name.startsWith("HTTP_") && !HEADER_NAME.test(name)) return false;
  return passed.has(name) || (requestVariable(name) && NAME.test(name));
}

/** --pass-env's names, and socket's environment without any variable that is a request's. */
export interface EnvironmentRule {
  passed: ReadonlySet<string>;
  inherited: Readonly<Record<string, string>>;
  /** The dropped names this process has already said (at most TOLD_AT_MOST): each is said once. */
  told: Set<string>;
}

/**
 * Names never offered --pass-env when dropped: they steer the program, its
 * loader, its interpreter or its shell, not the application (an
 * application's own, CGIT_CONFIG, GIT_PROJECT_ROOT, GITWEB_CONFIG, are).
 */
const STEERING = /^(LD_|PATH$|IFS$|ENV$|BASH_ENV$|SHELLOPTS$|PS4$|PERL5|PYTHON|NODE_|RUBY|GCONV_|MALLOC_|LOCPATH$|HTTP_)|PROXY$/i;
/** How many dropped names one process says without -v: a client sending random names must not flood the log. */
const TOLD_AT_MOST = 100;

/** What --pass-env and socket's environment say about every CGI's environment: worked out once per source. */
export function environmentRule(passEnv: readonly string[], own: NodeJS.ProcessEnv): EnvironmentRule {
  const passed = new Set(passEnv);
  // An inherited HTTPS=on or REMOTE_USER would tell every program a request
  // had them when its web server did not say so (fcgiwrap drops them too).
  // HTTP_PROXY goes with the other HTTP_*: in a CGI it reads as a header.
  // A --pass-env name is a request's too: its value is the request's or none.
  const inherited: Record<string, string> = {};
  for (const [name, value] of Object.entries(own)) {
    if (value !== undefined && !requestVariable(name) && !passed.has(name)) inherited[name] = value;
  }
  return { passed, inherited, told: new Set() };
}

/** A CGI's environment: the rule's inherited variables and the request's own, a value as bytes where it is not UTF-8. */
export interface CgiEnvironment {
  inherited: Readonly<Record<string, string>>;
  own: [name: string, value: string | Uint8Array][];
}

/**
 * The program's environment: socket's own (PATH and the like) without any
 * request variable, then the request's variables that the table above or
 * --pass-env allow, as the bytes they came as, and GATEWAY_INTERFACE where
 * the web server did not send it. The rest is dropped, named on a -v line.
 * socket's UCSPI variables are not set: they would describe the web
 * server's connection, not the client, whose address the web server sends
 * as REMOTE_ADDR.
 */
export function cgiEnvironment(variables: Variable[], rule: EnvironmentRule, log: (line: string) => void): CgiEnvironment {
  const own: CgiEnvironment["own"] = [];
  let dropped: string[] | undefined;
  let gateway = false;
  for (const [name, value, raw] of variables) {
    const allowed = requestMaySet(name, rule.passed);
    // A NUL cannot be in an environment string (FastCGI values may hold one).
    if (allowed && !value.includes("\0")) {
      own.push([name, raw ?? value]);
      gateway ||= name === "GATEWAY_INTERFACE";
    } else (dropped ??= []).push(allowed ? `${printable(name)} (a NUL in its value)` : printable(name));
  }
  if (!gateway) own.push(["GATEWAY_INTERFACE", "CGI/1.1"]);
  if (dropped) log(`dropped request variables not allowed: ${dropped.join(", ")}`);
  if (dropped) tellDropped(variables, rule);
  return { inherited: rule.inherited, own };
}

/**
 * A name an operator may have meant to pass (fcgiwrap passes everything;
 * cgit, gitweb and git-http-backend read their own variables): said once a
 * process, without -v, with the --pass-env that lets it through.
 */
function tellDropped(variables: Variable[], rule: EnvironmentRule): void {
  for (const [name] of variables) {
    if (rule.told.size >= TOLD_AT_MOST || rule.told.has(name) || requestMaySet(name, rule.passed)) continue;
    if (!NAME.test(name) || name.length > 80 || STEERING.test(name)) continue;
    rule.told.add(name);
    say(`dropped the request variable ${name}, which CGI programs are not given unless named: --pass-env ${name} lets it through`);
  }
}

/**
 * A client's text quoted for a line: JSON's escapes for C0 and the quote,
 * and \u escapes for DEL and C1 too, which JSON leaves raw (U+009B is a
 * terminal's CSI): its bytes must not make lines of their own nor reach
 * the operator's terminal as escape sequences.
 */
export function quoted(text: string): string {
  return JSON.stringify(text).replace(/[\x7f-\x9f]/g, (c) => `\\u00${c.charCodeAt(0).toString(16)}`);
}

/** A client's name (or short value) as a -v line shows it: its bytes must not make lines of their own. */
export function printable(name: string): string {
  const shown = NAME.test(name) ? name : quoted(name);
  return shown.length > 80 ? `${shown.slice(0, 80)}...` : shown;
}

/** The program --cgi-root chooses for a request (site.ts): its real path, and the request's variables as the CGI sees them. */
export interface SiteProgram {
  path: string;
  variables: Variable[];
}

/** Why nothing runs: the status the web server gets, and the -v line's reason; `unsafe`: the operator's to mend, said always. */
export interface SiteRefusal {
  status: 403 | 404;
  why: string;
  unsafe?: true;
}

/**
 * What a gateway runs: -p's one command (its words read once) or
 * --cgi-root's program chosen per request (site.ts `cgiSource` makes
 * both); the environment rule; and what a pool worker reports: `note`,
 * told of each request's method and URI as its program is about to start
 * (--slow), and `failed`, of each program that could not start (--status).
 */
export interface CgiSource {
  program: { command: Program } | { choose(variables: Variable[]): SiteProgram | SiteRefusal };
  rule: EnvironmentRule;
  note?: (request: string) => void;
  failed?: () => void;
  /** Told of each request --request-timeout ends (a pool worker's --status counts them). */
  overdue?: () => void;
}

/** A request's program, the directory it runs in, its environment and whom to tell when it cannot start; or the answer when nothing runs. */
export type Launch = { program: Program; cwd: string | undefined; env: CgiEnvironment; failed?: () => void; overdue?: () => void } | { answer: Uint8Array };

/**
 * The directory a CGI runs in (RFC 3875 section 7.2: "should" be its
 * script's): -p's program's when the command names it by a path; a bare
 * name found on PATH (php-cgi) runs where socket runs, as its directory
 * (/usr/bin) says nothing about a site.
 */
function commandDirectory(program: Program): string | undefined {
  if (!directories.has(program)) directories.set(program, program.argv0.includes("/") ? nodePath().dirname(nodePath().resolve(program.argv[0])) : undefined);
  return directories.get(program);
}

/** Each -p program's directory, worked out at its first request: the same for all. */
const directories = new WeakMap<Program, string | undefined>();

/**
 * The one function from a request's variables to what runs: the answer
 * when its body is over --max-body or --cgi-root refuses it, else the
 * program, its directory and its environment, all from the same list.
 */
export function prepareCgi(source: CgiSource, variables: Variable[], options: { verbose: boolean; maxBody: number }, protocol: Gateway): Launch {
  const log = (line: string) => gatewayLog(options, protocol, line);
  const length = valueOf(variables, "CONTENT_LENGTH") ?? "";
  const over = /^\d+$/.test(length) ? bodyOverLimit(options, Number(length), "declared") : undefined;
  if (over) {
    log(over);
    return { answer: TOO_LARGE };
  }
  let launch: Launch;
  if ("command" in source.program) {
    const program = source.program.command;
    launch = { program, cwd: commandDirectory(program), env: cgiEnvironment(variables, source.rule, log), failed: source.failed, overdue: source.overdue };
  } else {
    const chosen = source.program.choose(variables);
    if ("status" in chosen) {
      const line = `${chosen.status === 403 ? "403 Forbidden" : "404 Not Found"}: ${chosen.why}`;
      // A program someone else could have written is the operator's to mend: said without -v (once a second).
      if (chosen.unsafe) warn(`unsafe CGI ${chosen.why}`, `${protocol}: ${line}`);
      else log(line);
      return { answer: chosen.status === 403 ? FORBIDDEN : NOT_FOUND };
    }
    const program = { argv: [chosen.path], argv0: chosen.path, command: chosen.path };
    launch = { program, cwd: nodePath().dirname(chosen.path), env: cgiEnvironment(chosen.variables, source.rule, log), failed: source.failed, overdue: source.overdue };
  }
  if (source.note) source.note(requestText(launch.env));
  return launch;
}

/** A request's method and URI as --slow, --status and --request-timeout name it ("GET /x?y"). */
export function requestText(env: CgiEnvironment): string {
  // Either may be missing (a client that reaches the port itself): no empty word in the line.
  return [envValue(env, "REQUEST_METHOD"), envValue(env, "REQUEST_URI") ?? envValue(env, "SCRIPT_NAME")].filter(Boolean).join(" ");
}

/** A variable the CGI gets, as text. */
function envValue(env: CgiEnvironment, name: string): string | undefined {
  const value = env.own.find(([n]) => n === name)?.[1];
  return value === undefined || typeof value === "string" ? value : new TextDecoder().decode(value);
}

const answer = (status: string) => new TextEncoder().encode(`Status: ${status}\r\nContent-Type: text/plain\r\n\r\n${status}\n`);
const FORBIDDEN = answer("403 Forbidden");
const NOT_FOUND = answer("404 Not Found");

/** The CGI answer a web server turns into a 502 when the program cannot be run. */
export const BAD_GATEWAY = new TextEncoder().encode(
  "Status: 502 Bad Gateway\r\nContent-Type: text/plain\r\n\r\nThe gateway program could not be started.\n",
);
