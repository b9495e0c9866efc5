// The command line's checks: what getopt.ts read, then every combination
// socket(1) refuses, into one checked Options.
import { asksVersion, NAME, VERSION_LINE } from "../version.ts";
import type { AccessRuleText, Destination, Gateway, Options, PoolPolicy, StatusAddress } from "../options.ts";
import { programNameProblem, shellNeed } from "../connection/program.ts";
import { checkRules } from "../net/rules.ts";
import { EXIT_USAGE, optionTable, USAGE, type OptionName } from "./table.ts";
import { readCommandLine, type Read } from "./getopt.ts";
import { errorCode, errorText } from "../fatal.ts";
import { fs } from "../system/builtins.ts";
import { nonUtf8Word } from "../system/self.ts";

/** What main should do: run with options, or print (the help text, or given text) and exit. */
export type Parsed = { run: Options; warning: string } | { exit: number; help?: true; stdout?: string; stderr?: string };

type Refusal = Extract<Parsed, { exit: number }>;

const usageError = (message?: string): Refusal => ({
  exit: EXIT_USAGE,
  stderr: (message ? `${message}\n` : "") + `${USAGE}\n`,
});
const senseless = (what: string): Refusal => ({
  exit: EXIT_USAGE,
  stderr: `It does not make sense to set ${what}.\n`,
});

function number(text: string | undefined, name: string, min: number, max: number): number | string | undefined {
  if (text === undefined) return undefined;
  const value = /^\d+(\.\d+)?$/.test(text) ? Number(text) : NaN;
  if (!(value >= min && value <= max)) return `${NAME}: ${name} wants a number from ${min} to ${max}, not '${text}'`;
  return value;
}

export const MAX_WORKERS = 1024;

/** --max-body when not given: see its paragraph in socket(1). */
export const DEFAULT_MAX_BODY = 100 * 1024 * 1024;
/** --send-timeout when not given: nginx's send_timeout (request/send-deadline.ts). */
const DEFAULT_SEND_TIMEOUT_MS = 60_000;
const SIZE_UNITS: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };
/** The largest --max-body: a bound a file in $TMPDIR can still be. */
const MAX_BODY_LIMIT = 1024 ** 4;

/** A size as nginx's client_max_body_size reads it: bytes, or a number with k, m or g (either case, powers of 1024); at least 1 byte. */
export function parseSize(text: string): number | undefined {
  const m = text.match(/^(\d{1,13})([kmg]?)$/i);
  const size = m ? Number(m[1]) * SIZE_UNITS[m[2].toLowerCase()] : NaN;
  return size >= 1 && size <= MAX_BODY_LIMIT ? size : undefined;
}

/** A word of the command line whose bytes are not UTF-8 (system/self.ts): refused, as Bun would pass on other bytes. */
export function unreadableWord(argv: string[]): Refusal | undefined {
  // Only a word holding U+FFFD can be one: the common start reads no /proc file (nor loads node:fs for it).
  if (!argv.some((word) => word.includes("\uFFFD"))) return undefined;
  const at = nonUtf8Word(argv.length);
  return at === 0 ? undefined : { exit: EXIT_USAGE, stderr: `${NAME}: argument ${at} is not UTF-8, and socket cannot pass its bytes on unchanged\n` };
}

/**
 * Checks a command line. `passedSocket`: the service manager passed this
 * process a socket (LISTEN_PID), which `-s` alone then means.
 */
export function parseCommandLine(argv: string[], passedSocket: boolean): Parsed {
  if (asksVersion(argv)) return { exit: 0, stdout: VERSION_LINE };
  const read = readCommandLine(argv);
  if (typeof read === "string") return usageError(read);
  const { str, flag } = read;
  if (flag("help")) return { exit: 0, help: true };
  if (flag("version")) return { exit: 0, stdout: VERSION_LINE };

  const how = modeOptions(flag);
  if ("exit" in how) return how;
  const { server } = how;
  const program = str("program");
  if (program !== undefined && program.trim() === "") return usageError(`${NAME}: -p needs a command`);
  const unstartable = program === undefined ? undefined : programNameProblem(program);
  // One line, no usage line: the option was right, its value is not.
  if (unstartable !== undefined) return { exit: EXIT_USAGE, stderr: `${NAME}: ${unstartable}\n` };

  const destination = destinationOption(read, server, passedSocket);
  if ("exit" in destination) return destination;
  const serverChecked = serverOptions(read, server, destination);
  if ("exit" in serverChecked) return serverChecked;
  const cgiRoot = str("cgi-root");
  if (cgiRoot !== undefined) {
    const why = cgiRootProblem(cgiRoot, program, flag("scgi") || flag("fastcgi"));
    if (why) return usageError(`${NAME}: ${why}`);
  }
  const pool = poolOption(read, server, program, cgiRoot);
  if (pool !== undefined && "exit" in pool) return pool;
  const limits = limitOptions(read, server, destination);
  if ("exit" in limits) return limits;
  const gateway = gatewayOptions(read, program, server, cgiRoot !== undefined);
  if ("exit" in gateway) return gateway;
  const extras = operatorOptions(str, read.tokens, destination, server, pool !== undefined);
  if ("exit" in extras) return extras;
  const requestTimeout = requestTimeoutOption(str("request-timeout"), server, program !== undefined || gateway.gateway !== undefined, pool?.prestart === true);
  if (typeof requestTimeout === "object") return requestTimeout;

  return {
    warning: how.warning,
    run: {
      ...extras,
      ...limits,
      requestTimeoutMs: requestTimeout,
      ...gateway,
      ...serverChecked,
      destination,
      server,
      // a pool serves connections concurrently, forever
      loop: how.loop || pool !== undefined,
      fork: how.fork || pool !== undefined,
      program,
      cgiRoot,
      bind: str("bind"),
      background: flag("background"),
      quit: flag("quit"),
      readOnly: how.readOnly,
      writeOnly: how.writeOnly,
      crlf: flag("crlf"),
      verbose: flag("verbose"),
      pool,
      user: str("user"),
      group: str("group"),
      log: str("log"),
      pidFile: str("pid-file"),
    },
  };
}

/** -s, -r, -w, -l, -f and -b, as socket(1) combines them; -f without -s only warns. */
function modeOptions(
  flag: Read["flag"],
): { server: boolean; readOnly: boolean; writeOnly: boolean; loop: boolean; fork: boolean; warning: string } | Refusal {
  const server = flag("server");
  const readOnly = flag("read-only");
  const writeOnly = flag("write-only");
  const loop = flag("loop");
  const fork = flag("fork");
  if (readOnly && writeOnly) return senseless("-r and -w");
  if (loop && !server) return senseless("-l and not -s");
  if (flag("background") && !server) return senseless("-b and not -s");
  const warning = fork && !server ? "It does not make sense to set -f and not -s.\n" : "";
  return { server, readOnly, writeOnly, loop, fork, warning };
}

/** Where to connect or listen, from the words after the options. */
function destinationOption({ str, positionals }: Read, server: boolean, passedSocket: boolean): Destination | Refusal {
  let destination: Destination;
  if (positionals.length === 1 && positionals[0].includes("/")) {
    destination = { kind: "unix", path: positionals[0] };
  } else if (server && positionals.length === 1) {
    destination = { kind: "inet", host: str("bind"), port: positionals[0] };
  } else if (server && positionals.length === 0 && passedSocket) {
    destination = { kind: "passed" };
  } else if (!server && positionals.length === 2) {
    destination = { kind: "inet", host: positionals[0], port: positionals[1] };
  } else if (server && positionals.length === 0) {
    return usageError(`${NAME}: -s needs a port or /path, or a listening socket passed by systemd (LISTEN_PID, LISTEN_FDS)`);
  } else {
    return usageError();
  }
  if (destination.kind === "unix" && positionals[0].length === 0) return usageError();
  return destination;
}

/** -b, --log, --pid-file and --grace: what only a server has. */
function serverOptions({ str, flag }: Read, server: boolean, destination: Destination): Pick<Options, "graceMs"> | Refusal {
  if (destination.kind === "passed" && flag("background")) return senseless("-b and a socket passed by the service manager");
  if (str("log") !== undefined && !flag("background")) return usageError(`${NAME}: --log needs -b`);
  if (str("pid-file") !== undefined && !server) return usageError(`${NAME}: --pid-file is for servers`);
  const grace = number(str("grace"), "--grace", 0, 86400);
  if (typeof grace === "string") return usageError(grace);
  return { graceMs: (grace ?? 0) * 1000 };
}

/** -W and the options that only a pool has; without -W, those are refused. */
function poolOption({ str, flag }: Read, server: boolean, program: string | undefined, cgiRoot: string | undefined): PoolPolicy | undefined | Refusal {
  const workers = str("workers");
  if (workers === undefined) {
    if (str("grace") !== undefined && !server) return usageError(`${NAME}: --grace is for servers`);
    for (const k of ["max-requests", "idle-timeout", "ramp"] as const) {
      if (str(k) !== undefined) return usageError(`${NAME}: --${k} needs -W`);
    }
    if (flag("prestart")) return usageError(`${NAME}: --prestart needs -W`);
    return undefined;
  }
  if (!server || (program === undefined && cgiRoot === undefined)) return usageError(`${NAME}: -W needs -s and -p (or --cgi-root)`);
  const m = workers.match(/^(\d+)(?::(\d+))?$/);
  const min = m ? Number(m[1]) : NaN;
  const max = m ? Number(m[2] ?? m[1]) : NaN;
  if (!(min >= 1 && max >= min && max <= MAX_WORKERS)) {
    return usageError(`${NAME}: -W wants N or MIN:MAX with 1 <= MIN <= MAX <= ${MAX_WORKERS}, not '${workers}'`);
  }
  const ramp = str("ramp") ?? "spare";
  if (ramp !== "spare" && ramp !== "burst") return usageError(`${NAME}: --ramp wants spare or burst, not '${ramp}'`);
  const maxRequests = number(str("max-requests"), "--max-requests", 0, 1e9) ?? 0;
  const idle = number(str("idle-timeout"), "--idle-timeout", 0.1, 86400) ?? 10;
  const grace = number(str("grace"), "--grace", 0, 86400) ?? 10;
  if (typeof maxRequests === "string") return usageError(maxRequests);
  if (!Number.isInteger(maxRequests)) return usageError(`${NAME}: --max-requests wants a whole number, not '${str("max-requests")}'`);
  if (typeof idle === "string") return usageError(idle);
  if (typeof grace === "string") return usageError(grace);
  return { min, max, ramp, maxRequests, idleTimeoutMs: idle * 1000, graceMs: grace * 1000, prestart: flag("prestart") };
}

/** --timeout, --max-per-source, --defer-accept, --mode, -u and -g. */
function limitOptions(
  { str }: Read,
  server: boolean,
  destination: Destination,
): Pick<Options, "timeoutMs" | "maxPerSource" | "deferAcceptSecs" | "mode"> | Refusal {
  const timeout = number(str("timeout"), "--timeout", 0.001, 86400);
  if (typeof timeout === "string") return usageError(timeout);
  const maxPerSource = number(str("max-per-source"), "--max-per-source", 1, 1e6);
  if (typeof maxPerSource === "string") return usageError(maxPerSource);
  if (maxPerSource !== undefined && (!server || maxPerSource !== Math.floor(maxPerSource))) {
    return usageError(`${NAME}: --max-per-source wants a whole number and -s`);
  }
  const deferAccept = number(str("defer-accept"), "--defer-accept", 1, 86400);
  if (typeof deferAccept === "string") return usageError(deferAccept);
  if (deferAccept !== undefined && (!server || destination.kind !== "inet")) {
    return usageError(`${NAME}: --defer-accept is for a TCP server`);
  }
  const modeText = str("mode");
  let mode: number | undefined;
  if (modeText !== undefined) {
    if (!/^[0-7]{3,4}$/.test(modeText)) return usageError(`${NAME}: --mode wants octal permissions like 660, not '${modeText}'`);
    // A pool's UNIX status socket gets it too, as it gets -u and -g.
    const unixStatus = str("status")?.includes("/") === true;
    if (!server || (destination.kind !== "unix" && !unixStatus)) return usageError(`${NAME}: --mode is for a UNIX socket server`);
    mode = parseInt(modeText, 8);
  }
  if ((str("user") !== undefined || str("group") !== undefined) && !server) {
    return usageError(`${NAME}: -u and -g are for servers`);
  }
  return { timeoutMs: timeout === undefined ? undefined : timeout * 1000, maxPerSource, deferAcceptSecs: deferAccept, mode };
}

/**
 * --request-timeout: a server's, with -p or a gateway (a program per
 * request or connection to end); not --prestart's, whose program starts
 * before its connection exists.
 */
function requestTimeoutOption(text: string | undefined, server: boolean, runs: boolean, prestart: boolean): number | undefined | Refusal {
  const secs = number(text, "--request-timeout", 0.001, 86400);
  // One line, no usage line: the option was right, its value is not.
  if (typeof secs === "string") return { exit: EXIT_USAGE, stderr: `${secs}\n` };
  if (secs !== undefined && (!server || !runs)) return usageError(`${NAME}: --request-timeout needs -s and -p (or --scgi, --fastcgi)`);
  if (secs !== undefined && prestart) return usageError(`${NAME}: --request-timeout cannot apply to --prestart: its program starts before its connection arrives`);
  return secs === undefined ? undefined : secs * 1000;
}

/** --scgi or --fastcgi, and what only a gateway has: --pass-env, --max-body, --cgi-stderr, --send-timeout. */
function gatewayOptions(read: Read, program: string | undefined, server: boolean, site: boolean): Pick<Options, "gateway" | "passEnv" | "maxBody" | "cgiStderr" | "sendTimeoutMs"> | Refusal {
  const gateway = gatewayOption(read.flag, program, server, site);
  if (typeof gateway === "object") return gateway;
  const passEnv = read.list("pass-env");
  if (passEnv.length > 0 && gateway === undefined) return usageError(`${NAME}: --pass-env needs --scgi or --fastcgi`);
  const badName = passEnv.find((name) => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name));
  if (badName !== undefined) {
    return usageError(`${NAME}: --pass-env wants a variable name (letters, digits and _, not starting with a digit), not '${badName}'`);
  }
  const maxBodyText = read.str("max-body");
  const maxBody = maxBodyText === undefined ? DEFAULT_MAX_BODY : parseSize(maxBodyText);
  if (maxBodyText !== undefined && gateway === undefined) return usageError(`${NAME}: --max-body needs --scgi or --fastcgi`);
  if (maxBody === undefined) {
    return { exit: EXIT_USAGE, stderr: `${NAME}: --max-body wants a size from 1 to 1024g (bytes, or a number with k, m or g), not '${maxBodyText}'\n` };
  }
  const cgiStderr = cgiStderrOption(read.str("cgi-stderr"), gateway);
  if (typeof cgiStderr === "object") return cgiStderr;
  const sendTimeout = sendTimeoutOption(read.str("send-timeout"), gateway);
  if (typeof sendTimeout === "object") return sendTimeout;
  return { gateway, passEnv, maxBody, cgiStderr, sendTimeoutMs: sendTimeout };
}

/** --send-timeout: a gateway's (request/send-deadline.ts), 60 s when not given, 0 for none. */
function sendTimeoutOption(text: string | undefined, gateway: Options["gateway"]): number | undefined | Refusal {
  const secs = number(text, "--send-timeout", 0, 86400);
  // One line, no usage line: the option was right, its value is not.
  if (typeof secs === "string") return { exit: EXIT_USAGE, stderr: `${secs}\n` };
  if (secs !== undefined && gateway === undefined) return usageError(`${NAME}: --send-timeout needs --scgi or --fastcgi`);
  if (gateway === undefined || secs === 0) return undefined;
  return secs === undefined ? DEFAULT_SEND_TIMEOUT_MS : secs * 1000;
}

/** --cgi-stderr: "web" (FastCGI's default) or "log"; SCGI has no channel to the web server, so only "log". */
function cgiStderrOption(text: string | undefined, gateway: Gateway | undefined): Options["cgiStderr"] | Refusal {
  if (text === undefined) return gateway === "fastcgi" ? "web" : "log";
  if (gateway === undefined) return usageError(`${NAME}: --cgi-stderr needs --scgi or --fastcgi`);
  if (text !== "web" && text !== "log") return usageError(`${NAME}: --cgi-stderr wants web or log, not '${text}'`);
  if (text === "web" && gateway === "scgi") return usageError(`${NAME}: --cgi-stderr web is for --fastcgi: SCGI has no stderr channel to the web server`);
  return text;
}

/**
 * --cgi-root: an absolute path (a pool's workers parse the command line
 * again, after -b has changed directory) to a directory, with a gateway
 * and instead of -p.
 */
function cgiRootProblem(dir: string, program: string | undefined, gateway: boolean): string | undefined {
  if (!gateway) return "--cgi-root needs --scgi or --fastcgi";
  if (program !== undefined) return "--cgi-root and -p are mutually exclusive: the request names the program";
  if (!dir.startsWith("/")) return `--cgi-root wants an absolute path, not '${dir}'`;
  try {
    if (!fs().statSync(dir).isDirectory()) return `--cgi-root: '${dir}' is not a directory`;
  } catch (e) {
    return `--cgi-root: cannot use '${dir}': ${errorCode(e) ?? errorText(e)}`;
  }
  return undefined;
}

/**
 * --scgi / --fastcgi: the program is executed directly (never through sh,
 * as a request's bytes become its environment), and options that look at
 * or cut the byte stream make no sense under a protocol.
 */
function gatewayOption(
  flag: (k: OptionName) => boolean,
  program: string | undefined,
  server: boolean,
  /** --cgi-root names the programs instead of -p. */
  site: boolean,
): Gateway | undefined | Refusal {
  const scgi = flag("scgi");
  const fastcgi = flag("fastcgi");
  if (!scgi && !fastcgi) return undefined;
  if (scgi && fastcgi) return usageError(`${NAME}: --scgi and --fastcgi are mutually exclusive`);
  const name = scgi ? "--scgi" : "--fastcgi";
  if (!server || (program === undefined && !site)) return usageError(`${NAME}: ${name} needs -s and -p (or --cgi-root)`);
  const cutters = (["crlf", "read-only", "write-only", "quit"] as const).filter(flag);
  if (cutters.length > 0) {
    const letters = cutters.map((k) => optionTable[k].alias).map((a) => `-${a}`).join(", ");
    return usageError(`${NAME}: ${name} cannot be combined with ${letters}: the protocol decides what is read and written`);
  }
  // --prestart starts the program before a connection arrives, but a CGI's
  // environment is the request's, known only after its header.
  if (flag("prestart")) {
    return usageError(`${NAME}: --prestart cannot apply to ${name}: a CGI program's environment comes from the request, read after the connection arrives`);
  }
  const why = program === undefined ? undefined : shellNeed(program);
  if (why) {
    return usageError(
      `${NAME}: ${name} runs the -p program directly, never through a shell, and '${program}' needs one (${why}); put the command in a script and give its path`,
    );
  }
  return scgi ? "scgi" : "fastcgi";
}

/** A bare --status PORT: loopback, whatever the pool's own address (the page is for the host's own monitoring). */
const STATUS_HOST = "127.0.0.1";

/** The options an operator adds to a running server: --status, --slow, --allow/--deny. */
function operatorOptions(
  str: (k: OptionName) => string | undefined,
  tokens: { kind: string; name?: string; value?: string }[],
  destination: Destination,
  server: boolean,
  pool: boolean,
): Pick<Options, "status" | "slowMs" | "access"> | Refusal {
  const statusText = str("status");
  let status: StatusAddress | undefined;
  if (statusText !== undefined) {
    if (!pool) return usageError(`${NAME}: --status needs -W (it is the pool master's page)`);
    const m = statusText.match(/^(?:(.*):)?(\d+)$/);
    if (statusText.includes("/")) status = { kind: "unix", path: statusText };
    else if (m && Number(m[2]) <= 65535 && m[1] !== "") status = { kind: "inet", host: m[1]?.replace(/^\[(.*)\]$/, "$1") ?? STATUS_HOST, port: Number(m[2]) };
    else return usageError(`${NAME}: --status wants a /path, a PORT or HOST:PORT, not '${statusText}'`);
  }
  const slow = number(str("slow"), "--slow", 0.001, 86400);
  if (typeof slow === "string") return usageError(slow);
  if (slow !== undefined && !server) return usageError(`${NAME}: --slow is for servers`);
  const access: AccessRuleText[] = tokens.flatMap((t) =>
    t.kind === "option" && (t.name === "allow" || t.name === "deny") ? [{ allow: t.name === "allow", cidr: t.value ?? "" }] : [],
  );
  if (access.length > 0) {
    if (!server || destination.kind === "unix") {
      return usageError(`${NAME}: --allow and --deny are for a TCP server (a UNIX socket has --mode, -u and -g)`);
    }
    const bad = checkRules(access);
    // One line, no usage line: the option was right, its value is not.
    if (bad !== undefined) return { exit: EXIT_USAGE, stderr: `${NAME}: ${bad}\n` };
  }
  return { status, slowMs: slow === undefined ? undefined : slow * 1000, access };
}
