// What the command line says, checked: the one description of socket's
// options that every layer reads (the parser in cli/ builds it).

/** Where to connect or listen, before name and service lookup. */
export type Destination =
  | { kind: "inet"; host: string | undefined; port: string }
  | { kind: "unix"; path: string }
  /** `-s` alone: the listening socket systemd passed (fd 3). */
  | { kind: "passed" };

/** A pool's policy (-W and the options that go with it). */
export interface PoolPolicy {
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
  pool: PoolPolicy | undefined;
  timeoutMs: number | undefined;
  /** --request-timeout: a request (a -p connection) running longer from its program's start is ended (request/request-deadline.ts). */
  requestTimeoutMs: number | undefined;
  /** --send-timeout (gateways): an answer the web server takes no byte of for this long ends the request (request/send-deadline.ts); undefined: off, or no gateway. */
  sendTimeoutMs: number | undefined;
  /** Connections one source may have at once (TCP: remote address; UNIX: peer uid). */
  maxPerSource: number | undefined;
  /** TCP_DEFER_ACCEPT on the listener, in seconds. */
  deferAcceptSecs: number | undefined;
  mode: number | undefined;
  user: string | undefined;
  group: string | undefined;
  /** --scgi / --fastcgi: the connection speaks this protocol and -p is a CGI program. */
  gateway: Gateway | undefined;
  /** --cgi-root: instead of -p, the program is chosen per request inside this directory (request/site.ts). */
  cgiRoot: string | undefined;
  /** --pass-env: names a request may set besides the CGI variables (request/cgi.ts). */
  passEnv: string[];
  /** --max-body: the most bytes of body one request may send (request/cgi.ts bodyOverLimit). */
  maxBody: number;
  /**
   * --cgi-stderr: where a CGI's stderr goes. "web": FastCGI's STDERR records
   * (the default for FastCGI); "log": socket's stderr as whole lines naming
   * the program (request/stderr-lines.ts), SCGI's only way (it has no channel).
   */
  cgiStderr: "web" | "log";
  /** -b: where the daemon's stdout and stderr go. */
  log: string | undefined;
  pidFile: string | undefined;
  /** Classic server: on TERM/INT, how long running programs get before TERM and KILL (the pool has its own). */
  graceMs: number;
  /** --status (pool only). */
  status: StatusAddress | undefined;
  /** --slow: a connection running longer than this is logged and counted. */
  slowMs: number | undefined;
  /** --allow/--deny, in order; empty: everyone may connect. */
  access: AccessRuleText[];
}

/** --status: where the pool master answers HTTP (a UNIX path, or a TCP port on a host: 127.0.0.1 unless given). */
export type StatusAddress = { kind: "unix"; path: string } | { kind: "inet"; host: string; port: number };

/** One --allow or --deny, in command-line order (net/rules.ts). */
export interface AccessRuleText {
  allow: boolean;
  cidr: string;
}

/** The protocols a server can speak instead of handing over bytes. */
export type Gateway = "scgi" | "fastcgi";

/**
 * What serving one plain connection reads of the options, and `failed`:
 * told of each program that could not start or exited 126/127 (a pool
 * worker's --status counts them).
 */
export type ServeOptions = Pick<Options, "crlf" | "quit" | "readOnly" | "writeOnly" | "verbose" | "timeoutMs" | "requestTimeoutMs"> & { failed?: () => void };

/**
 * What a gateway reads: -v, --timeout, --request-timeout, --send-timeout, --pass-env, --max-body, --cgi-stderr, and the pool's size
 * (FastCGI's GET_VALUES). What runs (-p's command or --cgi-root) is its own
 * argument (request/cgi.ts CgiSource).
 */
export type GatewayOptions = Pick<Options, "verbose" | "timeoutMs" | "requestTimeoutMs" | "sendTimeoutMs" | "passEnv" | "maxBody" | "cgiStderr" | "pool">;
