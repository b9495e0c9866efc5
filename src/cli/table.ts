// The command line's one table of options (the parser reads it, citty
// renders --help from it), the usage line and the note --help adds.
import type { ArgDef } from "citty";
import { NAME } from "../version.ts";

export const EXIT_USAGE = 15;

export const optionTable = {
  server: { type: "boolean", alias: "s", description: "Server: listen on PORT or /path instead of connecting" },
  loop: { type: "boolean", alias: "l", description: "Loop: after a connection ends, accept the next (server only)" },
  fork: { type: "boolean", alias: "f", description: "Serve connections concurrently and go on accepting (server only)" },
  program: { type: "string", alias: "p", valueHint: "command", description: "Run command per connection, on the connection (through /bin/sh -c when it needs a shell)" },
  bind: { type: "string", alias: "B", valueHint: "address", description: "Local address to bind (server: listen address; client: source address)" },
  background: { type: "boolean", alias: "b", description: "Detach and run as a daemon once it serves (server only); stdio to /dev/null or --log" },
  log: { type: "string", valueHint: "FILE", description: "With -b: the daemon's stdout and stderr, appended to FILE (default /dev/null)" },
  "pid-file": { type: "string", valueHint: "FILE", description: "Server: write the pid to FILE once serving; removed at exit" },
  quit: { type: "boolean", alias: "q", description: "Close the connection at end of input (stdin, or the program's output; the program itself runs on)" },
  "read-only": { type: "boolean", alias: "r", description: "Only copy socket -> stdout; never read stdin" },
  "write-only": { type: "boolean", alias: "w", description: "Only copy stdin -> socket; never read the socket" },
  crlf: { type: "boolean", alias: "c", description: "LF -> CRLF towards the socket, CR dropped from the socket" },
  verbose: { type: "boolean", alias: "v", description: "Messages about listening, connections, closing and the pool on stderr" },
  workers: { type: "string", alias: "W", valueHint: "N|MIN:MAX", description: "Prefork pool: N workers, or MIN to MAX growing under load (needs -s, and -p or --cgi-root; at most 1024: each worker is a process of ~5-11 MB)" },
  "max-requests": { type: "string", valueHint: "N", description: "Pool: a worker ends after N connections and is replaced (0 = no limit)" },
  "idle-timeout": { type: "string", valueHint: "SECS", description: "Pool MIN:MAX: retire a worker idle this long, down to MIN (default 10)" },
  ramp: { type: "string", valueHint: "spare|burst", description: "Pool MIN:MAX growth: one spare per busy moment, or straight to MAX" },
  grace: { type: "string", valueHint: "SECS", description: "Server: on TERM/INT, time running programs get to finish, then TERM, KILL (pool 10, else 0)" },
  prestart: { type: "boolean", description: "Pool: each worker starts its next program before its connection arrives (read the note below)" },
  timeout: { type: "string", valueHint: "SECS", description: "Close a connection idle (no byte either way) this long" },
  "request-timeout": { type: "string", valueHint: "SECS", description: "Server -p, --scgi, --fastcgi: end a request (a -p connection) running SECS from its program's start: TERM, then KILL to its group; 504 if nothing was answered" },
  "send-timeout": { type: "string", valueHint: "SECS", description: "--scgi/--fastcgi: end a request whose answer the web server takes no byte of for SECS (default 60, 0 = never): the connection dropped, TERM, then KILL to the CGI's group" },
  "max-per-source": { type: "string", valueHint: "N", description: "Server: close at once a connection from a source (TCP: remote address; UNIX: peer uid) that has N already" },
  "defer-accept": { type: "string", valueHint: "SECS", description: "TCP server: the kernel holds a connection until it sends a byte (TCP_DEFER_ACCEPT), up to SECS" },
  mode: { type: "string", valueHint: "OCTAL", description: "Permissions of the UNIX socket file, and of a --status /path (e.g. 660)" },
  user: { type: "string", alias: "u", valueHint: "USER", description: "After binding, run as this user (name or uid)" },
  group: { type: "string", alias: "g", valueHint: "GROUP", description: "After binding, run as this group (name or gid)" },
  scgi: { type: "boolean", description: "Speak SCGI: run the -p program per request as a CGI (needs -s, and -p or --cgi-root; no shell)" },
  fastcgi: { type: "boolean", description: "Speak FastCGI (responder): run the -p program per request as a CGI (needs -s, and -p or --cgi-root; no shell)" },
  "cgi-root": { type: "string", valueHint: "DIR", description: "--scgi/--fastcgi instead of -p: run the program each request names (SCRIPT_FILENAME, or DOCUMENT_ROOT + SCRIPT_NAME) inside DIR, as fcgiwrap does" },
  "pass-env": { type: "string", valueHint: "NAME", multiple: true, description: "--scgi/--fastcgi: a request may also set the variable NAME (repeatable); see ENVIRONMENT in socket(1)" },
  "max-body": { type: "string", valueHint: "SIZE", description: "--scgi/--fastcgi: a request may send at most SIZE bytes of body (k, m, g: KiB, MiB, GiB; default 100m); more gets Status: 413" },
  "cgi-stderr": { type: "string", valueHint: "web|log", description: "--fastcgi: a CGI's stderr to the web server in STDERR records (web, the default) or to socket's stderr as lines 'cgi PID PROGRAM: ...' (log, always so for --scgi)" },
  status: { type: "string", valueHint: "ADDRESS", description: "Pool: answer HTTP at ADDRESS (/path, PORT on 127.0.0.1, or HOST:PORT): GET /status (?json, ?openmetrics, ?full) and /ping" },
  slow: { type: "string", valueHint: "SECS", description: "Server: a line on stderr for each connection still running after SECS (counted as slow requests)" },
  allow: { type: "string", valueHint: "CIDR", multiple: true, description: "TCP server: let peers in CIDR connect (repeatable; with --deny the first rule that matches decides; with any --allow, the rest is denied)" },
  deny: { type: "string", valueHint: "CIDR", multiple: true, description: "TCP server: close at once a connection from CIDR (repeatable; see --allow)" },
  help: { type: "boolean", description: "Show this help" },
  version: { type: "boolean", description: "Print the version" },
} as const satisfies Record<string, ArgDef & { multiple?: true }>;

export type OptionName = keyof typeof optionTable;

export const USAGE =
  `Usage: ${NAME} [-bcflqrvw] [-B local ip] [-p prog] [-W n[:max] [--prestart]] [--scgi|--fastcgi] [-u user] [-g group] {{-s|host} port | [-s] /path | -s}`;

/** What a user of --prestart must know, too long for its line in the table. */
export const PRESTART_NOTE = `
--prestart: the program starts before its connection exists. What it prints
before reading its input (a banner, a timestamp) is from that moment; a
program that ends before its connection arrives (such as date) is replaced,
never handed a connection. Its environment has PROTO and the local address
socket listens on (TCPLOCALIP, TCPLOCALPORT, or UNIXLOCALPATH) but no remote
address: TCPREMOTEIP and TCPREMOTEPORT (UNIXREMOTEPID, ...) are unknown when
it starts. Its stdin and stdout+stderr are pipes, not the socket. It is for
programs that read a request first, such as SCGI and FastCGI launchers.
`;


/** A pool master's signals (SIGNALS in socket(1) says more). */
export const SIGNALS_NOTE = `
Signals of a pool master (-W); other modes keep socket(1)'s:
  HUP        reload: new workers start, each old one finishes its connection and exits
  USR2       upgrade: the executable at socket's path starts as the new master on the
             same socket; once it serves, the old master drains and exits
  USR1       reopen -b's --log (ignored without --log)
  TTIN/TTOU  one worker more/fewer (MIN:MAX: both move)
  TERM/INT   drain within --grace, then exit
`;
