// The command line: one table of options (citty renders --help from it),
// parsed with getopt semantics by node:util parseArgs, because citty's own
// parser folds -b/-B and -w/-W together (SPEC section 7).
import { parseArgs } from "node:util";
import { defineCommand, renderUsage, type ArgDef } from "citty";
import { NAME, VERSION } from "./version.ts";
import { shellNeed } from "./connection/program.ts";
import { socketsPassed } from "./net/activation.ts";

const EXIT_USAGE = 15;

const optionTable = {
  server: { type: "boolean", alias: "s", description: "Server: listen on PORT or /path instead of connecting" },
  loop: { type: "boolean", alias: "l", description: "Loop: after a connection ends, accept the next (server only)" },
  fork: { type: "boolean", alias: "f", description: "Serve connections concurrently and go on accepting (server only)" },
  program: { type: "string", alias: "p", valueHint: "command", description: "Run `/bin/sh -c command` per connection, on the connection" },
  bind: { type: "string", alias: "B", valueHint: "address", description: "Local address to bind (server: listen address; client: source address)" },
  background: { type: "boolean", alias: "b", description: "Detach and run as a daemon once it serves (server only); stdio to /dev/null or --log" },
  log: { type: "string", valueHint: "FILE", description: "With -b: the daemon's stdout and stderr, appended to FILE (default /dev/null)" },
  "pid-file": { type: "string", valueHint: "FILE", description: "Server: write the pid to FILE once serving; removed at exit" },
  quit: { type: "boolean", alias: "q", description: "Close the connection at end of input (stdin, or the program's output; the program itself runs on)" },
  "read-only": { type: "boolean", alias: "r", description: "Only copy socket -> stdout; never read stdin" },
  "write-only": { type: "boolean", alias: "w", description: "Only copy stdin -> socket; never read the socket" },
  crlf: { type: "boolean", alias: "c", description: "LF -> CRLF towards the socket, CR dropped from the socket" },
  verbose: { type: "boolean", alias: "v", description: "Messages about listening, connections, closing and the pool on stderr" },
  workers: { type: "string", alias: "W", valueHint: "N|MIN:MAX", description: "Prefork pool: N workers, or MIN to MAX growing under load (needs -s, -p; at most 1024: each worker is a process of ~5-11 MB)" },
  "max-requests": { type: "string", valueHint: "N", description: "Pool: a worker ends after N connections and is replaced (0 = no limit)" },
  "idle-timeout": { type: "string", valueHint: "SECS", description: "Pool MIN:MAX: retire a worker idle this long, down to MIN (default 10)" },
  ramp: { type: "string", valueHint: "spare|burst", description: "Pool MIN:MAX growth: one spare per busy moment, or straight to MAX" },
  grace: { type: "string", valueHint: "SECS", description: "Server: on TERM/INT, time running programs get to finish, then TERM, KILL (pool 10, else 0)" },
  prestart: { type: "boolean", description: "Pool: each worker starts its next program before its connection arrives (read the note below)" },
  timeout: { type: "string", valueHint: "SECS", description: "Close a connection idle (no byte either way) this long" },
  "max-per-source": { type: "string", valueHint: "N", description: "Server: close at once a connection from a source (TCP: remote address; UNIX: peer uid) that has N already" },
  "defer-accept": { type: "string", valueHint: "SECS", description: "TCP server: the kernel holds a connection until it sends a byte (TCP_DEFER_ACCEPT), up to SECS" },
  mode: { type: "string", valueHint: "OCTAL", description: "Permissions of the UNIX socket file (e.g. 660)" },
  user: { type: "string", alias: "u", valueHint: "USER", description: "After binding, run as this user (name or uid)" },
  group: { type: "string", alias: "g", valueHint: "GROUP", description: "After binding, run as this group (name or gid)" },
  scgi: { type: "boolean", description: "Speak SCGI: run the -p program per request as a CGI (needs -s, -p; no shell)" },
  fastcgi: { type: "boolean", description: "Speak FastCGI (responder): run the -p program per request as a CGI (needs -s, -p; no shell)" },
  "pass-env": { type: "string", valueHint: "NAME", multiple: true, description: "--scgi/--fastcgi: a request may also set the variable NAME (repeatable); see ENVIRONMENT in socket(1)" },
  help: { type: "boolean", description: "Show this help" },
  version: { type: "boolean", description: "Print the version" },
} as const satisfies Record<string, ArgDef & { multiple?: true }>;

const command = defineCommand({
  meta: { name: NAME, version: VERSION, description: "Shell access to TCP and UNIX-domain sockets, with a prefork pool" },
  args: {
    ...optionTable,
    destination: { type: "positional", valueHint: "host port | -s port | /path", description: "Where to connect, or with -s where to listen (none: the socket systemd passed)", required: false },
  },
});

const USAGE =
  `Usage: ${NAME} [-bcflqrvw] [-B local ip] [-p prog] [-W n[:max] [--prestart]] [--scgi|--fastcgi] [-u user] [-g group] {{-s|host} port | [-s] /path | -s}`;

/** Where to connect or listen, before name and service lookup. */
export type Destination =
  | { kind: "inet"; host: string | undefined; port: string }
  | { kind: "unix"; path: string }
  /** `-s` alone: the listening socket systemd passed (fd 3). */
  | { kind: "passed" };

export interface Pool {
  min: number;
  max: number;
  ramp: "spare" | "burst";
  maxRequests: number;
  idleTimeoutMs: number;
  graceMs: number;
  /** Each worker starts its next program before its connection arrives. */
  prestart: boolean;
}

/** Everything the command line says, checked. */
export interface Options {
  destination: Destination;
  server: boolean;
  loop: boolean;
  fork: boolean;
  program: string | undefined;
  bind: string | undefined;
  background: boolean;
  quit: boolean;
  readOnly: boolean;
  writeOnly: boolean;
  crlf: boolean;
  verbose: boolean;
  pool: Pool | undefined;
  timeoutMs: number | undefined;
  /** Connections one source may have at once (TCP: remote address; UNIX: peer uid). */
  maxPerSource: number | undefined;
  /** TCP_DEFER_ACCEPT on the listener, in seconds. */
  deferAcceptSecs: number | undefined;
  mode: number | undefined;
  user: string | undefined;
  group: string | undefined;
  /** --scgi / --fastcgi: the connection speaks this protocol and -p is a CGI program. */
  gateway: "scgi" | "fastcgi" | undefined;
  /** --pass-env: names a request may set besides the CGI variables (gateway/cgi.ts). */
  passEnv: string[];
  /** -b: where the daemon's stdout and stderr go. */
  log: string | undefined;
  pidFile: string | undefined;
  /** Classic server: on TERM/INT, how long running programs get before TERM and KILL (the pool has its own). */
  graceMs: number;
}

/** What main should do: run with options, or print (the help text, or given text) and exit. */
export type Parsed = { run: Options; warning: string } | { exit: number; help?: true; stdout?: string; stderr?: string };

const usageError = (message?: string): Parsed => ({
  exit: EXIT_USAGE,
  stderr: (message ? `${message}\n` : "") + `${USAGE}\n`,
});
const senseless = (what: string): Parsed => ({
  exit: EXIT_USAGE,
  stderr: `It does not make sense to set ${what}.\n`,
});

/** The getopt wording for what parseArgs rejected. */
function getoptMessage(error: Error & { code?: string }): string {
  const option = error.message.match(/'(-?-?[^',\s]+)/)?.[1] ?? "";
  if (option.startsWith("--")) {
    return error.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE"
      ? `${NAME}: option '${option}' requires an argument`
      : `${NAME}: unrecognized option '${option}'`;
  }
  const letter = option.replace(/^-/, "").slice(0, 1);
  return error.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE"
    ? `${NAME}: option requires an argument -- '${letter}'`
    : `${NAME}: invalid option -- '${letter}'`;
}

const valueLetters = new Set<string>(
  Object.values(optionTable).flatMap((def) => (def.type === "string" && "alias" in def ? [def.alias] : [])),
);
const valueNames = new Set(Object.entries(optionTable).flatMap(([name, def]) => (def.type === "string" ? [name] : [])));

/**
 * getopt takes the word after an option that wants a value as that value,
 * even when it starts with "-" (`-p -x`); parseArgs calls that ambiguous
 * unless it is attached, so attach it.
 */
function attachDashValues(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = argv[i + 1];
    if (arg === "--") return [...out, ...argv.slice(i)];
    const wantsValue =
      (/^-[^-]/.test(arg) && valueLetters.has(arg.slice(-1)) && ![...arg.slice(1, -1)].some((c) => valueLetters.has(c))) ||
      (arg.startsWith("--") && valueNames.has(arg.slice(2)));
    if (wantsValue && next?.startsWith("-")) {
      out.push(arg.startsWith("--") ? `${arg}=${next}` : arg + next);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

function number(text: string | undefined, name: string, min: number, max: number): number | string | undefined {
  if (text === undefined) return undefined;
  const value = /^\d+(\.\d+)?$/.test(text) ? Number(text) : NaN;
  if (!(value >= min && value <= max)) return `${NAME}: ${name} wants a number from ${min} to ${max}, not '${text}'`;
  return value;
}

const MAX_WORKERS = 1024;

export function parseCommandLine(argv: string[]): Parsed {
  if (argv[0] === "-version") return { exit: 0, stdout: `${NAME} version ${VERSION}\n` };
  let parsed;
  try {
    parsed = parseArgs({
      args: attachDashValues(argv),
      strict: true,
      allowPositionals: true,
      options: Object.fromEntries(
        Object.entries(optionTable).map(([name, def]) => [
          name,
          { type: def.type, ...("alias" in def && { short: def.alias }), ...("multiple" in def && { multiple: def.multiple }) },
        ]),
      ) as Record<keyof typeof optionTable, { type: "string" | "boolean"; short?: string; multiple?: boolean }>,
    });
  } catch (e) {
    return usageError(getoptMessage(e as Error));
  }
  const v = parsed.values as Partial<Record<keyof typeof optionTable, string | boolean | string[]>>;
  const str = (k: keyof typeof optionTable) => (typeof v[k] === "string" ? (v[k] as string) : undefined);
  const flag = (k: keyof typeof optionTable) => v[k] === true;

  if (flag("help")) return { exit: 0, help: true };
  if (flag("version")) return { exit: 0, stdout: `${NAME} version ${VERSION}\n` };

  const server = flag("server");
  const readOnly = flag("read-only");
  const writeOnly = flag("write-only");
  const workers = str("workers");
  let loop = flag("loop");
  let fork = flag("fork");
  if (readOnly && writeOnly) return senseless("-r and -w");
  if (loop && !server) return senseless("-l and not -s");
  if (flag("background") && !server) return senseless("-b and not -s");
  let warning = "";
  if (fork && !server) warning = "It does not make sense to set -f and not -s.\n";

  const program = str("program");
  if (program !== undefined && program.trim() === "") return usageError(`${NAME}: -p needs a command`);

  const positionals = parsed.positionals;
  let destination: Destination;
  if (positionals.length === 1 && positionals[0].includes("/")) {
    destination = { kind: "unix", path: positionals[0] };
  } else if (server && positionals.length === 1) {
    destination = { kind: "inet", host: str("bind"), port: positionals[0] };
  } else if (server && positionals.length === 0 && socketsPassed()) {
    destination = { kind: "passed" };
  } else if (!server && positionals.length === 2) {
    destination = { kind: "inet", host: positionals[0], port: positionals[1] };
  } else if (server && positionals.length === 0) {
    return usageError(`${NAME}: -s needs a port or /path, or a listening socket passed by systemd (LISTEN_PID, LISTEN_FDS)`);
  } else {
    return usageError();
  }
  if (destination.kind === "unix" && positionals[0].length === 0) return usageError();
  if (destination.kind === "passed" && flag("background")) return senseless("-b and a socket passed by the service manager");
  if (str("log") !== undefined && !flag("background")) return usageError(`${NAME}: --log needs -b`);
  if (str("pid-file") !== undefined && !server) return usageError(`${NAME}: --pid-file is for servers`);
  const graceAny = number(str("grace"), "--grace", 0, 86400);
  if (typeof graceAny === "string") return usageError(graceAny);

  let pool: Pool | undefined;
  if (workers !== undefined) {
    if (!server || program === undefined) return usageError(`${NAME}: -W needs -s and -p`);
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
    for (const n of [maxRequests, idle, grace]) if (typeof n === "string") return usageError(n);
    pool = {
      min,
      max,
      ramp,
      maxRequests: maxRequests as number,
      idleTimeoutMs: (idle as number) * 1000,
      graceMs: (grace as number) * 1000,
      prestart: flag("prestart"),
    };
    loop = true; // a pool serves connections concurrently, forever
    fork = true;
  } else {
    if (str("grace") !== undefined && !server) return usageError(`${NAME}: --grace is for servers`);
    for (const k of ["max-requests", "idle-timeout", "ramp"] as const) {
      if (str(k) !== undefined) return usageError(`${NAME}: --${k} needs -W`);
    }
    if (flag("prestart")) return usageError(`${NAME}: --prestart needs -W`);
  }

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
    if (!server || destination.kind !== "unix") return usageError(`${NAME}: --mode is for a UNIX socket server`);
    mode = parseInt(modeText, 8);
  }
  if ((str("user") !== undefined || str("group") !== undefined) && !server) {
    return usageError(`${NAME}: -u and -g are for servers`);
  }
  const gateway = gatewayOption(flag, program, server);
  if (typeof gateway === "object") return gateway;
  const passEnv = (v["pass-env"] ?? []) as string[];
  if (passEnv.length > 0 && gateway === undefined) return usageError(`${NAME}: --pass-env needs --scgi or --fastcgi`);
  const badName = passEnv.find((name) => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name));
  if (badName !== undefined) {
    return usageError(`${NAME}: --pass-env wants a variable name (letters, digits and _, not starting with a digit), not '${badName}'`);
  }

  return {
    warning,
    run: {
      destination,
      server,
      loop,
      fork,
      program,
      bind: str("bind"),
      background: flag("background"),
      quit: flag("quit"),
      readOnly,
      writeOnly,
      crlf: flag("crlf"),
      verbose: flag("verbose"),
      pool,
      timeoutMs: timeout === undefined ? undefined : timeout * 1000,
      maxPerSource,
      deferAcceptSecs: deferAccept,
      mode,
      user: str("user"),
      group: str("group"),
      gateway,
      passEnv,
      log: str("log"),
      pidFile: str("pid-file"),
      graceMs: (graceAny ?? 0) * 1000,
    },
  };
}

/** What a user of --prestart must know, too long for its line in the table. */
const PRESTART_NOTE = `
--prestart: the program starts before its connection exists. What it prints
before reading its input (a banner, a timestamp) is from that moment; a
program that ends before its connection arrives (such as date) is replaced,
never handed a connection. Its environment has PROTO and the local address
socket listens on (TCPLOCALIP, TCPLOCALPORT, or UNIXLOCALPATH) but no remote
address: TCPREMOTEIP and TCPREMOTEPORT (UNIXREMOTEPID, ...) are unknown when
it starts. Its stdin and stdout+stderr are pipes, not the socket. It is for
programs that read a request first, such as SCGI and FastCGI launchers.
`;

/**
 * --scgi / --fastcgi: the program is executed directly (never through sh,
 * as a request's bytes become its environment), and options that look at
 * or cut the byte stream make no sense under a protocol.
 */
function gatewayOption(
  flag: (k: keyof typeof optionTable) => boolean,
  program: string | undefined,
  server: boolean,
): "scgi" | "fastcgi" | undefined | Parsed {
  const scgi = flag("scgi");
  const fastcgi = flag("fastcgi");
  if (!scgi && !fastcgi) return undefined;
  if (scgi && fastcgi) return usageError(`${NAME}: --scgi and --fastcgi are mutually exclusive`);
  const name = scgi ? "--scgi" : "--fastcgi";
  if (!server || program === undefined) return usageError(`${NAME}: ${name} needs -s and -p`);
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
  const why = shellNeed(program);
  if (why) {
    return usageError(
      `${NAME}: ${name} runs the -p program directly, never through a shell, and '${program}' needs one (${why}); put the command in a script and give its path`,
    );
  }
  return scgi ? "scgi" : "fastcgi";
}

export async function helpText(): Promise<string> {
  const text = `${await renderUsage(command)}\n\n${USAGE}\n${PRESTART_NOTE}`;
  // citty colours unconditionally; only a terminal should get the escapes.
  return process.stdout.isTTY ? text : Bun.stripANSI(text);
}
