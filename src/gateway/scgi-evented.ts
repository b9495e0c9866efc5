// SCGI on Bun's loop (-f, and a pool worker's connection under --timeout
// on a UNIX socket, where idle time is measured on copied bytes): the
// header collected from data events, the body spooled to a file, then the
// program on pipes, joined to the connection by the copy loop.
import { Copy, type Bytes } from "../connection/copy.ts";
import type { EventSocket, SocketEvents } from "../connection/events.ts";
import type { GatewayOptions } from "../options.ts";
import { close } from "../system/fd.ts";
import { rewind } from "../system/files.ts";
import { BAD_GATEWAY, bodyDue, gatewayLog, LIMITS, prepareCgi, UNAVAILABLE, type CgiSource } from "../request/cgi.ts";
import { limitMs, MAX_DIGITS, parseNetstring, type ScgiRequest } from "../request/scgi-header.ts";
import { requestOverdue } from "../request/request-deadline.ts";
import { sendStalled } from "../request/send-deadline.ts";
import { endWhenDue } from "../connection/deadline.ts";
import { describeCgi, endProgram, spawnCgi, type Run } from "./cgi-process.ts";
import { streamUntilExit } from "./until-exit.ts";
import { bodyFile, releaseDisk, reserveDisk } from "./body-spool.ts";
import { logStream } from "./cgi-stderr.ts";
import { fs } from "../system/builtins.ts";

/**
 * An SCGI connection served with the copy loop: collects the header from
 * data events, then starts the program on pipes and copies the body that
 * came with the header and the rest, and the program's output back.
 */
export class ScgiHandler implements SocketEvents {
  private socket: EventSocket | undefined;
  private chunks: Bytes[] = [];
  private size = 0;
  private copy: Copy | undefined;
  /** The program's stderr, read into the log until it ends or the program exits. */
  private stderr: Promise<void> | undefined;
  private timer: Timer | undefined;
  /** The program could not run: the answer is sent, the rest of the request is dropped. */
  private refused = false;
  /** The body being spooled before the program runs: the file, the bytes still to come, what to run. */
  private spool: { fd: number; left: number; length: number; started: number; launch: Run } | undefined;
  private finish!: () => void;
  readonly done = new Promise<void>((resolve) => (this.finish = resolve));

  constructor(
    private readonly options: GatewayOptions,
    private readonly source: CgiSource,
    /** Already read (a worker read the header itself): go straight to the program. */
    private readonly request?: ScgiRequest,
  ) {}

  attach(socket: EventSocket): void {
    this.socket = socket;
    if (this.request) return this.start(this.request, new Uint8Array(0));
    // Once, from the connect: not restarted by data, so a drip cannot stretch it.
    this.timer = setTimeout(() => this.fail("no complete header in time"), limitMs(this.options));
  }

  onData(chunk: Uint8Array): void {
    if (this.copy) return this.copy.onData(chunk);
    if (this.spool) return this.take(chunk);
    if (this.refused) return;
    this.chunks.push(new Uint8Array(chunk) as Bytes);
    this.size += chunk.length;
    const bytes = this.chunks.length === 1 ? this.chunks[0] : (Buffer.concat(this.chunks) as Bytes);
    this.chunks = [bytes];
    let parsed: ReturnType<typeof parseNetstring>;
    try {
      parsed = parseNetstring(bytes);
    } catch (e) {
      parsed = { error: `internal error: ${e instanceof Error ? e.message : String(e)}` }; // this connection only
    }
    if ("need" in parsed) {
      if (this.size > LIMITS.headerBytes + MAX_DIGITS + 2) this.fail("header over the limit");
      return;
    }
    if ("error" in parsed) return this.fail(parsed.error);
    clearTimeout(this.timer);
    this.chunks = [];
    this.start(parsed, bytes.subarray(parsed.bodyStart));
  }

  private start(request: ScgiRequest, bodyStart: Uint8Array): void {
    const launch = prepareCgi(this.source, request.variables, this.options, "scgi");
    if ("answer" in launch) return this.refuse(launch.answer);
    if (request.contentLength === 0) return void this.run(launch, undefined);
    // As spoolBody does in a pool, for the same reason: the whole body before the program runs. Its room on disk
    // is taken as its bytes come, as FastCGI's: taken at once from CONTENT_LENGTH, a few connections that send
    // a header and then drip their body would hold all of it, and every other body would be refused.
    let fd: number;
    try {
      fd = bodyFile();
    } catch (e) {
      return this.fail(e instanceof Error ? e.message : String(e)); // as a worker's spoolBody does
    }
    this.spool = { fd, left: request.contentLength, length: request.contentLength, started: Date.now(), launch };
    this.take(bodyStart);
  }

  /** Body bytes into the spool; the program starts once all CONTENT_LENGTH bytes are in. */
  private take(chunk: Uint8Array): void {
    const spool = this.spool!;
    clearTimeout(this.timer);
    const part = chunk.subarray(0, spool.left);
    if (!reserveDisk(part.length)) {
      this.dropSpool();
      return this.refuse(UNAVAILABLE); // the rest is read and dropped, as any refused request's
    }
    spool.left -= part.length; // counted from here: dropSpool gives it back however the write ends
    try {
      for (let at = 0; at < part.length; ) at += fs().writeSync(spool.fd, part.subarray(at));
    } catch (e) {
      return this.fail(`unable to spool the body: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (spool.left > 0) {
      // The whole body at MIN_BODY_RATE after its first limitMs, as a pool worker's spoolBody: a drip must not hold on.
      const came = spool.length - spool.left;
      const due = bodyDue(spool.started, limitMs(this.options), came, Date.now()) - Date.now();
      this.timer = setTimeout(() => this.fail(`connection timed out in the body (${came} of ${spool.length} bytes came)`), Math.max(0, due));
      return;
    }
    this.spool = undefined;
    let given = false;
    try {
      rewind(spool.fd);
      given = this.run(spool.launch, spool.fd, spool.length);
    } finally {
      close(spool.fd); // the program has its own
      if (!given) releaseDisk(spool.length);
    }
  }

  /** The program could not or must not run: this answer, then as finishAnswer does: FIN, drop the body until the peer's EOF, then close. */
  private refuse(answer: Uint8Array): void {
    const socket = this.socket!;
    this.refused = true;
    socket.write(answer);
    socket.shutdown();
    this.timer = setTimeout(() => socket.terminate(), limitMs(this.options));
  }

  /**
   * The program on pipes, or with the spooled body as its stdin; the copy loop joins them to the connection. Whether a
   * program has the body: its `onDisk` bytes are given back at its exit, as the file is its stdin till then.
   */
  private run(launch: Run, body: number | undefined, onDisk = 0): boolean {
    const socket = this.socket!;
    // Its stderr into socket's log, line by line (cgi-stderr.ts): SCGI has no channel for it.
    // No body: /dev/null, as in a pool (a CGI reading to EOF must not wait for the client's close).
    const proc = spawnCgi(launch, [body ?? "ignore", "pipe", "pipe"], "evented");
    if (!proc?.stdout) {
      this.refuse(BAD_GATEWAY);
      return false;
    }
    void proc.exited.finally(() => releaseDisk(onDisk));
    this.stderr = logStream(proc.stderr, proc);
    // The answer ends when the program exits (lingerMs: FIN, then the
    // unread body is dropped); a background process it left is cut off.
    const log = (line: string) => gatewayLog(this.options, "scgi", line);
    // --send-timeout (request/send-deadline.ts): the web server took none of the answer; the copy loop waits for its end.
    const stalled = (waitedMs: number) => {
      sendStalled({ protocol: "scgi", program: describeCgi(proc), waitedMs });
      endProgram(proc);
      socket.terminate();
    };
    this.copy = new Copy(
      {
        sources: [streamUntilExit(proc.stdout, proc.exited)],
        // The whole body was spooled (or there is none): nothing more of the peer's goes to the program.
        sink: null,
        program: { process: proc, exited: proc.exited },
      },
      { crlf: false, quit: false, timeoutMs: this.options.timeoutMs, log, lingerMs: limitMs(this.options), endUnheard: true, sendTimeoutMs: this.options.sendTimeoutMs, stalled },
    );
    const copy = this.copy;
    // --request-timeout from the program's start (its body was spooled before): a 504 if nothing went, else the answer cut.
    endWhenDue(proc, this.options.requestTimeoutMs, (ranMs) => copy.cut(requestOverdue({ protocol: "scgi", ...describeCgi(proc), ranMs, answered: copy.sent > 0 })));
    copy.attach(socket);
    return true;
  }

  private fail(why: string): void {
    clearTimeout(this.timer);
    gatewayLog(this.options, "scgi", why);
    this.socket?.terminate();
  }

  onEnd(): void {
    if (this.copy) return this.copy.onEnd();
    if (this.spool) return this.fail("connection ended in the body");
    if (this.refused) return void this.socket?.end();
    this.fail("connection ended in the header");
  }

  onDrain(): void {
    this.copy?.onDrain();
  }

  /** The body's file closed and its room given back: it never reaches a program. */
  private dropSpool(): void {
    if (!this.spool) return;
    close(this.spool.fd);
    releaseDisk(this.spool.length - this.spool.left);
    this.spool = undefined;
  }

  onClose(): void {
    clearTimeout(this.timer);
    this.dropSpool();
    if (!this.copy) return this.finish();
    this.copy.onClose();
    void Promise.all([this.copy.done, this.stderr]).then(() => this.finish());
  }
}
