// Peers of the gateway tests: a real nginx in front of dist/socket, and
// the SCGI and FastCGI protocols spoken directly, for what a web server
// would never send.
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Socket } from "bun";
import { collect, waitFor, type Target } from "./harness.ts";

export const NGINX = Bun.which("nginx", { PATH: `${process.env.PATH}:/usr/sbin:/sbin` });
export const noNginx = NGINX === null;

// ---- nginx ----

export interface Nginx extends AsyncDisposable {
  /** Where nginx listens: a UNIX socket (nginx cannot bind port 0 and say which port it got). */
  socket: string;
  /** An HTTP request through nginx; `path` is the request's path and query. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  errorLog(): string;
}

/** nginx in the foreground, everything it writes inside `dir`, in front of `upstream`. */
export async function startNginx(
  dir: string,
  protocol: "scgi" | "fastcgi",
  upstream: Target,
  /** maxBody: nginx's client_max_body_size ("16m"); 4m when not given. requestBuffering false: nginx passes the body as it comes. */
  opts: {
    keepConn?: boolean;
    /** The upstream's cache of idle kept connections (nginx's `keepalive`); 4 when not given. */
    keepalive?: number;
    /** Requests before nginx closes a kept upstream connection (its `keepalive_requests`, 1000 when not given). */
    keepaliveRequests?: number;
    maxBody?: string;
    requestBuffering?: false;
    /** The server block's locations, given the directives that pass a request on; `location / { PASS }` when not given. */
    locations?: (pass: string) => string;
    /** Also listen on this TCP port of 127.0.0.1 (for clients that cannot use a UNIX socket, such as git). */
    tcpPort?: number;
    /** More of the http block, as written: whole server blocks (a documented recipe's). */
    servers?: string;
  } = {},
): Promise<Nginx> {
  const root = join(dir, "nginx");
  mkdirSync(root, { recursive: true });
  const server = typeof upstream === "number" ? `127.0.0.1:${upstream}` : `unix:${upstream}`;
  const pass =
    protocol === "scgi"
      ? `include /etc/nginx/scgi_params; scgi_pass app;`
      : `include /etc/nginx/fastcgi_params; fastcgi_pass app;${opts.keepConn ? " fastcgi_keep_conn on;" : ""}${opts.requestBuffering === false ? " fastcgi_request_buffering off;" : ""}`;
  const conf = `daemon off; master_process off; pid ${root}/nginx.pid; error_log ${root}/error.log info;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${root}/body; fastcgi_temp_path ${root}/fastcgi; scgi_temp_path ${root}/scgi;
  uwsgi_temp_path ${root}/uwsgi; proxy_temp_path ${root}/proxy;
  client_max_body_size ${opts.maxBody ?? "4m"};
  upstream app { server ${server}; keepalive ${opts.keepalive ?? 4}; keepalive_timeout 5s;${opts.keepaliveRequests ? ` keepalive_requests ${opts.keepaliveRequests};` : ""} }
  server { listen unix:${root}/http.sock;${opts.tcpPort ? ` listen 127.0.0.1:${opts.tcpPort};` : ""} location = /ready { return 204; } ${opts.locations ? opts.locations(pass) : `location / { ${pass} }`} }
${opts.servers ?? ""}
}
`;
  writeFileSync(join(root, "nginx.conf"), conf);
  // A server block as written says `include fastcgi_params;`: nginx reads it beside its configuration, as in /etc/nginx.
  for (const params of ["fastcgi_params", "scgi_params"]) copyFileSync(`/etc/nginx/${params}`, join(root, params));
  const proc = Bun.spawn([NGINX!, "-p", root, "-c", join(root, "nginx.conf"), "-e", join(root, "error.log")], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const stderr = collect(proc.stderr);
  const stop = async () => {
    proc.kill("SIGKILL");
    await proc.exited;
  };
  const socket = join(root, "http.sock");
  const request = (path: string, init?: RequestInit) => fetch(`http://localhost${path}`, { ...init, unix: socket });
  try {
    await waitFor("nginx to listen", async () => {
      if (proc.exitCode !== null) throw new Error(`nginx exited ${proc.exitCode}: ${await stderr.done}`);
      return request("/ready").then(
        () => true,
        () => false,
      );
    });
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    socket,
    fetch: request,
    errorLog: () => (existsSync(join(root, "error.log")) ? readFileSync(join(root, "error.log"), "utf8") : ""),
    [Symbol.asyncDispose]: stop,
  };
}

/** A TCP port free a moment ago (nginx cannot bind port 0 and say which it got). */
export function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

// ---- Apache ----

export const APACHE = "/usr/sbin/apache2";
const APACHE_MODULES = "/usr/lib/apache2/modules";
export const noApache = !existsSync(APACHE) || !existsSync(join(APACHE_MODULES, "mod_proxy_fcgi.so"));

export interface Apache extends AsyncDisposable {
  fetch(path: string, init?: RequestInit): Promise<Response>;
  /** Where Apache listens on 127.0.0.1. */
  port: number;
}

/** apache2 in the foreground (-X: one process), everything it writes inside `dir`, with these directives. */
export async function startApache(dir: string, directives: string): Promise<Apache> {
  const root = join(dir, "apache");
  mkdirSync(root, { recursive: true });
  const port = freePort();
  // What Debian's a2enmod would enable for the recipes: proxy_fcgi and proxy_scgi, SetEnv's env.
  const load = ["mpm_event", "authz_core", "alias", "env", "proxy", "proxy_fcgi", "proxy_scgi"].map(
    (m) => `LoadModule ${m}_module ${APACHE_MODULES}/mod_${m}.so`,
  );
  // Root drops to nobody for its children; the temp dir must let it in.
  chmodSync(dir, 0o755);
  writeFileSync(
    join(root, "apache2.conf"),
    [
      ...load,
      `ServerRoot ${root}`,
      "ServerName localhost",
      `Listen 127.0.0.1:${port}`,
      `PidFile ${root}/apache2.pid`,
      `DefaultRuntimeDir ${root}`,
      `Mutex file:${root} default`,
      `ErrorLog ${root}/error.log`,
      "LogLevel warn",
      "User nobody",
      "Group nogroup",
      directives,
    ].join("\n"),
  );
  const proc = Bun.spawn([APACHE, "-X", "-f", join(root, "apache2.conf"), "-DFOREGROUND"], { stdio: ["ignore", "ignore", "pipe"] });
  const stderr = collect(proc.stderr);
  const stop = async () => {
    proc.kill("SIGKILL");
    await proc.exited;
  };
  const request = (path: string, init?: RequestInit) => fetch(`http://127.0.0.1:${port}${path}`, init);
  try {
    await waitFor(
      "apache2 to listen",
      async () => {
        if (proc.exitCode !== null) {
          const log = existsSync(join(root, "error.log")) ? readFileSync(join(root, "error.log"), "utf8") : "";
          throw new Error(`apache2 exited ${proc.exitCode}: ${stderr.text()} ${log}`);
        }
        return request("/").then(
          () => true,
          () => false,
        );
      },
      10000,
    );
  } catch (e) {
    await stop();
    throw e;
  }
  return { fetch: request, port, [Symbol.asyncDispose]: stop };
}

// ---- speaking the protocols directly ----

export const enc = new TextEncoder();

export function scgiRequest(vars: [string, string][], body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const header = Buffer.concat(vars.map(([n, v]) => Buffer.from(`${n}\0${v}\0`)));
  return Buffer.concat([Buffer.from(`${header.length}:`), header, Buffer.from(","), body]);
}

export function record(type: number, id: number, content: Uint8Array = new Uint8Array(0)): Uint8Array {
  const head = Buffer.alloc(8);
  head[0] = 1;
  head[1] = type;
  head.writeUInt16BE(id, 2);
  head.writeUInt16BE(content.length, 4);
  return Buffer.concat([head, content]);
}

export function pairs(vars: [string, string][]): Uint8Array {
  const len = (n: number) => (n < 128 ? Buffer.from([n]) : Buffer.from([(n >>> 24) | 0x80, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]));
  return Buffer.concat(vars.flatMap(([n, v]) => [len(Buffer.byteLength(n)), len(Buffer.byteLength(v)), Buffer.from(n), Buffer.from(v)]));
}

export function begin(id: number, role = 1, keep = false): Uint8Array {
  return record(1, id, new Uint8Array([role >> 8, role & 255, keep ? 1 : 0, 0, 0, 0, 0, 0]));
}

/** A whole FastCGI request: BEGIN_REQUEST, PARAMS, the empty PARAMS, STDIN, the empty STDIN. */
export function fcgiRequest(id: number, vars: [string, string][], body: Uint8Array = new Uint8Array(0), keep = false): Uint8Array {
  const parts = [begin(id, 1, keep), record(4, id, pairs(vars)), record(4, id)];
  for (let at = 0; at < body.length; at += 65535) parts.push(record(5, id, body.subarray(at, at + 65535)));
  parts.push(record(5, id));
  return Buffer.concat(parts);
}

export interface Parsed {
  records: { type: number; id: number; content: Buffer }[];
  stdout: string;
  stderr: string;
}

export function parseRecords(data: Buffer): Parsed {
  const records: Parsed["records"] = [];
  let at = 0;
  while (at + 8 <= data.length) {
    const length = data.readUInt16BE(at + 4);
    records.push({ type: data[at + 1], id: data.readUInt16BE(at + 2), content: data.subarray(at + 8, at + 8 + length) });
    at += 8 + length + data[at + 6];
  }
  const text = (type: number) => Buffer.concat(records.filter((r) => r.type === type).map((r) => r.content)).toString();
  return { records, stdout: text(6), stderr: text(7) };
}

export function endRequests(parsed: Parsed): { id: number; app: number; protocol: number }[] {
  return parsed.records.filter((r) => r.type === 3).map((r) => ({ id: r.id, app: r.content.readUInt32BE(0), protocol: r.content[4] }));
}

/** What a conversing test hears as it happens: all that came so far at each arrival, and the connection's end. */
export interface Hear {
  data?(all: Buffer): void;
  end?(): void;
}

/** A client that keeps the connection open and lets the test speak in turns. */
export async function converse(
  target: Target,
  hear: Hear = {},
): Promise<{
  /** The client's own port (TCP). */
  localPort: number;
  send(bytes: Uint8Array): void;
  /** All that came so far. */
  data(): Buffer;
  until(what: string, check: (data: Buffer) => boolean): Promise<Buffer>;
  closed(ms?: number): Promise<void>;
  close(): void;
}> {
  const chunks: Buffer[] = [];
  let closed = false;
  const ended = () => {
    closed = true;
    hear.end?.();
  };
  const handlers = {
    data: (_s: Socket<undefined>, d: Buffer) => {
      chunks.push(Buffer.from(d));
      hear.data?.(Buffer.concat(chunks));
    },
    close: ended,
    error: ended,
  };
  const socket =
    typeof target === "number"
      ? await Bun.connect({ hostname: "127.0.0.1", port: target, socket: handlers })
      : await Bun.connect({ unix: target, socket: handlers });
  return {
    localPort: socket.localPort,
    send: (bytes) => void socket.write(bytes),
    data: () => Buffer.concat(chunks),
    until: async (what, check) => {
      await waitFor(what, () => check(Buffer.concat(chunks)));
      return Buffer.concat(chunks);
    },
    closed: (ms) => waitFor("the server to close the connection", () => closed, ms),
    close: () => socket.end(),
  };
}

/** The two gateway protocols, for tests that run each: the test's name, socket's flag, nginx's kind. */
export const PROTOCOLS = [
  { name: "SCGI", flag: "--scgi", protocol: "scgi" as const },
  { name: "FastCGI", flag: "--fastcgi", protocol: "fastcgi" as const },
];

/** One FastCGI GET on its own TCP connection (CONTENT_LENGTH empty, as nginx sends it, unless given); everything the server sent until it closed. */
export async function fcgiGet(port: number, contentLength = ""): Promise<Buffer> {
  const client = await converse(port);
  client.send(fcgiRequest(1, [["REQUEST_METHOD", "GET"], ["CONTENT_LENGTH", contentLength]]));
  await client.closed(15000);
  return client.data();
}

/** Bytes waiting unread on the TCP socket from `localPort` to `remotePort` (/proc/net/tcp's rx_queue): sent, not yet read by the server. */
export function unread(localPort: number, remotePort: number): number {
  const hex = (port: number) => port.toString(16).toUpperCase().padStart(4, "0");
  const line = readFileSync("/proc/net/tcp", "utf8")
    .split("\n")
    .map((l) => l.trim().split(/\s+/))
    .find((f) => f[1]?.endsWith(`:${hex(localPort)}`) && f[2]?.endsWith(`:${hex(remotePort)}`));
  return line ? parseInt(line[4].split(":")[1], 16) : 0;
}

/**
 * A web server that reads the answer its own way, played by python3: it
 * connects to `target` (a TCP port of 127.0.0.1, or a UNIX path), with a
 * receive buffer as small as the kernel allows when `smallBuffer`, sends
 * `request`, then runs `then` (python lines; `s` is the socket, `args`
 * sys.argv[3:]). The caller kills it (peerOutput does).
 */
export function pythonPeer(target: Target, request: Uint8Array, then: string[], opts: { args?: string[]; smallBuffer?: boolean } = {}) {
  const code = [
    "import os, socket, sys, time",
    "port = sys.argv[1]",
    "args = sys.argv[3:]",
    "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM) if port.isdigit() else socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
    ...(opts.smallBuffer ? ["s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)"] : []),
    "s.connect(('127.0.0.1', int(port)) if port.isdigit() else port)",
    "s.sendall(bytes.fromhex(sys.argv[2]))",
    ...then,
  ].join("\n");
  const argv = ["python3", "-c", code, String(target), Buffer.from(request).toString("hex"), ...(opts.args ?? [])];
  return Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "inherit" });
}

/** What a pythonPeer wrote on stdout, once it has exited 0 within `ms` (the test fails otherwise); it is killed either way. */
export async function peerOutput(proc: ReturnType<typeof pythonPeer>, ms: number): Promise<Buffer> {
  try {
    const done = await Promise.race([proc.exited, Bun.sleep(ms).then(() => "late")]);
    if (done !== 0) throw new Error(`the python web server ended with ${done}`);
    return Buffer.from(await new Response(proc.stdout).arrayBuffer());
  } finally {
    proc.kill("SIGKILL");
    await proc.exited;
  }
}

/** Python lines for pythonPeer: read `size` bytes at a time, pausing `pause` s after each, until the data ends with args[0] (hex; an END_REQUEST) or the connection ends; then write it all on stdout. */
export const readToSuffix = (size: number, pause = 0) => [
  "data = b''",
  "while not data.endswith(bytes.fromhex(args[0])):",
  `    chunk = s.recv(${size})`,
  "    if not chunk: break",
  "    data += chunk",
  ...(pause > 0 ? [`    time.sleep(${pause})`] : []),
  "sys.stdout.buffer.write(data)",
];

/** The last 16 bytes of an answer to request 1 that completed with status 0: its END_REQUEST record, as hex. */
export const END_REQUEST_1_HEX = "0103000100080000" + "0000000000000000";
