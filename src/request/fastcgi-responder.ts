// FastCGI's responder role, written once for both engines: what each record may do in each state of a connection,
// when the connection must be dropped (its deadline, as data), and how a request ends (the empty STDOUT, END_REQUEST,
// then the next request or the connection's end). No I/O here: the engine that owns the connection (fastcgi-blocking.ts
// in a pool worker, fastcgi-evented.ts on Bun's loop for -f) tells the responder what happened (bytes came, bytes moved,
// the program is done, the web server closed, the worker leaves) with the time, and the responder tells the engine what
// to do through ResponderEffects.
//
// Requests are not multiplexed (FCGI_MPXS_CONNS=0): one at a time; with FCGI_KEEP_CONN the next may follow on it.
import { BAD_GATEWAY, bodyOverLimit, gatewayLog, HEADER_TIMEOUT_MS, TOO_LARGE, UNAVAILABLE, valueOf, type Variable } from "./cgi.ts";
import { dropParams, encodeRecord, endOfRequest, endRequest, heldParams, unknownType, gatherParams, managementAnswer, KEEP_CONN, RecordReader, ROLE_RESPONDER, STATUS, TYPE, type FcgiRecord } from "./fastcgi-records.ts";
import { BodyClock, draggedHeader, endOverdue, endStalled, NO_VARIABLES, sendDeadline, KEPT_HEADER_MS, keptVerdict, QUEUE_LIMIT, RequestClock, sooner, type BodyKind, type Deadline, type Phase, type ResponderConfig, type ResponderEffects } from "./fastcgi-engine.ts";

/** One FastCGI connection's responder: the rules; the engine does the I/O. */
export class FastCgiResponder {
  private readonly reader = new RecordReader();
  // phase, requestId, bodyEnded, ending, peerEnded and over are read by the engine, set only here.
  phase: Phase = "none";
  /** The request in hand's id (meaningful when phase is not "none"). */
  requestId = 0;
  private keep = false;
  private readonly held = heldParams(); // PARAMS so far (gatherParams)
  /** The body's time, and how much of it came (streamed or spooled), bounded by --max-body; the engine pauses it. */
  readonly body = new BodyClock();
  /** The empty STDIN came (or the request is over): the program has all its input. */
  bodyEnded = false;
  /** --request-timeout's clock (request-deadline.ts); `clock.cut`: the rest of the program's output is dropped. */
  readonly clock = new RequestClock();
  /** A spooled body's variables and its size so far (a refused one's answer: BodyClock). */
  private spooled = NO_VARIABLES;
  private spoolSize = 0;
  /** No further request: the connection closes once what is queued has gone. */
  ending = false;
  /** The web server closed its side (EOF); the connection has closed: nothing more is sent. */
  peerEnded = false;
  over = false;
  /** Where each deadline counts from: the header's (accept, or the end of a request), the spooled body's last record, the last byte moved. */
  private headerFrom: number;
  private movedAt = 0;
  /** When the last request ended (undefined: none yet). */
  private lastEnd: number | undefined;
  /** When a byte last came or a request last ended (the accept, at first). */
  private quietSince: number;
  /** Since when this connection's process has been leaving; whether as a retirement (the service goes on), not a stop. */
  private leavingSince: number | undefined;
  retiring = false;
  /** Since when the next header has been hurried (another connection waits, or leaving), and why; whether it then dragged on. */
  private hurrySince: number | undefined;
  private hurryWhy = "";
  private dragged = false;

  constructor(
    private readonly config: ResponderConfig,
    private readonly effects: ResponderEffects,
    now: number,
  ) {
    this.headerFrom = this.quietSince = now;
  }

  /** Bytes from the connection. */
  input(chunk: Uint8Array, now: number): void {
    if (this.over) return;
    this.quietSince = now;
    if (this.phase === "running") this.movedAt = now;
    const records = this.reader.push(chunk);
    if ("error" in records) return this.drop(records.error);
    for (const record of records) {
      const error = this.record(record, now);
      if (error) return this.drop(error);
      if (this.effects.queued() > QUEUE_LIMIT) return this.drop(`the web server does not read its replies: over ${QUEUE_LIMIT / 1024} KiB wait`);
      if (this.over || this.ending) return;
    }
  }

  /** Bytes moved either way while the program runs: --timeout restarts. */
  moved(now: number): void {
    if (this.phase === "running") this.movedAt = now;
  }

  /** The program has exited and its output has all gone: the request ends with its status. */
  exited(status: number, now: number): void {
    if (this.phase === "running") this.complete(status, now);
  }

  /** Ends the connection for a reason a -v line gives: its program (if any) goes too. */
  drop(why: string): void {
    if (this.over) return;
    this.log(why);
    this.over = true;
    this.effects.drop();
  }

  /** The connection has closed under the engine (reset, a failed send): nothing more is sent. */
  closed(): void {
    this.over = true;
  }

  /** Leaving (a drain, a retirement): no further request once quiet (fastcgi-engine.ts keptVerdict). For -f an idle kept
   * connection ends now, one in or before its request (sent on connecting) after it, its header hurried as a leaving
   * worker's (KEPT_HEADER_MS): one that never sends a whole header must not hold the drain for all of --grace. */
  leave(now: number, retire = false): void {
    // A stop after a retirement makes it a stop, never the reverse; retired, an idle connection waits (keptVerdict).
    this.retiring = retire && (this.leavingSince === undefined || this.retiring);
    if (this.retiring && this.phase === "none" && this.reader.partial === 0) this.hurrySince = undefined;
    this.leavingSince ??= now;
    if (this.config.pool || (this.phase !== "none" && this.phase !== "params")) return;
    if (this.phase === "none" && this.reader.partial === 0 && this.lastEnd !== undefined) return this.end();
    [this.hurrySince, this.hurryWhy] = [this.hurrySince ?? now, "no complete request in time while this process leaves"];
  }

  /** A deadline has come: --request-timeout's ends the request (its 504 when nothing was answered), any other drops the connection. */
  expire(now: number): void {
    const due = this.over ? undefined : this.deadline();
    if (!due || now < due.at) return;
    if (due.stalled) {
      this.over = true; // endStalled drops the connection: nothing more is sent
      return endStalled(this.effects, now, this.clock.cut);
    }
    // Kept with nothing of a next request: a FIN after what the kernel holds of the last answer (a reset loses it), and
    // the limit again for the web server to take it. A header begun, or a connection ending already, is dropped.
    if (!due.overdue && this.phase === "none" && this.reader.partial === 0 && !this.ending) {
      this.headerFrom = now;
      return this.end(due.why);
    }
    if (!due.overdue) return this.drop(due.why);
    this.bodyEnded = true;
    const answer = endOverdue(this.clock, this.effects, now);
    if (answer) this.effects.send(encodeRecord(TYPE.STDOUT, this.requestId, answer));
  }

  /** When the connection is dropped (or, --request-timeout's, the request ended) unless something happens first. */
  deadline(): Deadline | undefined {
    return sooner(this.ownDeadline(), sendDeadline(this.effects.sending, this.config.options.sendTimeoutMs));
  }

  private ownDeadline(): Deadline | undefined {
    const { timeoutMs } = this.config.options;
    const limit = Math.min(HEADER_TIMEOUT_MS, timeoutMs ?? Infinity);
    // A body comes at a least rate after its first `limit` (fastcgi-engine.ts BodyClock): a client dripping one must not hold the worker.
    const body = { at: this.body.due(limit), why: "the request's body came too slowly" };
    if (this.phase === "spooling") return body;
    // While a program runs, --timeout applies (every byte moved either way restarts it), and --request-timeout from its start; once that has ended it, its exit (the KILL's second away) ends the request, END_REQUEST not cut off.
    if (this.phase === "running") {
      const idle = timeoutMs === undefined || this.clock.cut ? undefined : { at: this.movedAt + timeoutMs, why: "connection timed out" };
      const mine = this.bodyEnded || this.body.paused || (idle !== undefined && idle.at < body.at) ? idle : body;
      return sooner(mine, this.clock.deadline(this.config.options.requestTimeoutMs));
    }
    // A request's header (BEGIN_REQUEST, PARAMS to the empty PARAMS) comes within an absolute deadline from the
    // accept or the end of the previous request: bytes arriving do not extend it, or a client dripping a byte
    // at a time would hold the worker for ever. After the last request it bounds the wait for a client that does not take the end.
    const at = this.headerFrom + limit;
    if (this.ending) return { at, why: "connection timed out" };
    const hurried = this.hurrySince === undefined ? Infinity : this.hurrySince + KEPT_HEADER_MS;
    return hurried < at ? { at: hurried, why: this.hurryWhy } : { at, why: "no complete request in time" };
  }

  /** Kept between two requests (or in the next one's header), or not yet in one while leaving: keptVerdict's rules apply. */
  get between(): boolean {
    return (this.lastEnd !== undefined || this.leavingSince !== undefined) && (this.phase === "none" || this.phase === "params") && !this.ending;
  }

  /** Between requests: closed once quiet, or its header hurried, when others wait or the worker leaves (fastcgi-engine.ts keptVerdict). */
  keptCheck(now: number, othersWait: () => boolean): void {
    if (!this.between) return;
    const verdict = keptVerdict({
      now,
      quietSince: this.quietSince,
      idle: this.phase === "none" && this.reader.partial === 0 && this.effects.queued() === 0,
      leavingSince: this.leavingSince,
      retiring: this.retiring,
      othersWait,
      hurrySince: this.hurrySince,
    });
    if (verdict === undefined) return;
    if ("close" in verdict) {
      this.log(verdict.close);
      return this.end();
    }
    if (this.hurrySince !== undefined) return;
    this.hurrySince = verdict.hurrySince;
    this.hurryWhy = verdict.why;
  }

  /**
   * The web server closed its side. An idle connection, or one in a request's header, is simply over. With a program
   * running, its stdin ends at once. In the middle of the body the request is aborted (the FastCGI spec, 5.4: a web
   * server aborts a request by closing the connection): our side closes, and the program is ended. After the whole body
   * a client that only half-closed may still read the answer, so the program goes on; if the peer has gone, the first
   * write of its output fails, the connection closes, and the program is ended then.
   */
  peerClosed(): void {
    this.peerEnded = true;
    if (this.phase !== "running") {
      if (this.reader.partial > 0 || this.phase !== "none") this.log("connection ended in a request's header");
      return this.end();
    }
    if (this.bodyEnded) return this.effects.endBody(false);
    this.bodyEnded = true;
    this.effects.endBody(true);
    this.log(`connection closed by the web server in request ${this.requestId}'s body: the request is aborted`);
    this.end();
  }

  /** One record; a returned string is why the connection is dropped. */
  private record({ type, requestId: id, content }: FcgiRecord, now: number): string | undefined {
    if (id === 0) {
      const answer = managementAnswer(type, content, this.config.maxConns);
      if ("error" in answer) return answer.error;
      return void this.effects.send(answer);
    }
    const mine = this.phase !== "none" && this.requestId === id;
    switch (type) {
      case TYPE.BEGIN_REQUEST:
        return this.begin(id, content);
      case TYPE.ABORT_REQUEST:
        if (mine) this.abort(now);
        return undefined;
      case TYPE.PARAMS:
        return mine ? this.paramsRecord(content, now) : undefined;
      case TYPE.STDIN:
        return mine ? this.stdin(content, now) : undefined;
      case TYPE.DATA:
        return undefined; // the filter role's; a responder has none
      case TYPE.END_REQUEST:
      case TYPE.STDOUT:
      case TYPE.STDERR:
      case TYPE.GET_VALUES_RESULT:
      case TYPE.UNKNOWN_TYPE:
        return `record type ${type} is the application's to send`;
      default:
        this.effects.send(unknownType(type));
        return undefined;
    }
  }

  private begin(id: number, content: Uint8Array): string | undefined {
    if (content.length < 8) return "BEGIN_REQUEST body shorter than 8 bytes";
    if (this.phase !== "none") {
      if (this.requestId === id) return `BEGIN_REQUEST for request ${id}, which is running`;
      this.effects.send(endRequest(id, 0, STATUS.CANT_MPX_CONN));
      return undefined;
    }
    const role = (content[0] << 8) | content[1];
    const keep = (content[2] & KEEP_CONN) !== 0;
    if (role !== ROLE_RESPONDER) {
      this.log(`role ${role} refused: only the responder role (1) is served`);
      this.effects.send(endRequest(id, 0, STATUS.UNKNOWN_ROLE));
      if (!keep) this.end();
      return undefined;
    }
    this.phase = "params";
    this.requestId = id;
    this.keep = keep;
    this.body.received = this.spoolSize = 0;
    dropParams(this.held);
    this.bodyEnded = false;
    return undefined;
  }

  /**
   * The end of PARAMS: the body streams into the program's stdin (a CONTENT_LENGTH within --max-body); or it is
   * spooled whole before the program runs (no CONTENT_LENGTH: the CGI must get one, RFC 3875 4.2); or refused (a
   * CONTENT_LENGTH over --max-body, or a program that does not run: run). A refused body is read and dropped to its
   * end, and only then answered: nginx stops sending a body once it has the answer's header, so an answer before the
   * body's end would leave the request hanging, and a close with the body unread sends a reset that can destroy the
   * answer (nginx's 502). The body's deadline bounds the wait.
   */
  private paramsRecord(content: Uint8Array, now: number): string | undefined {
    if (this.phase !== "params") return "PARAMS after the end of PARAMS";
    const gathered = gatherParams(this.held, content);
    if (typeof gathered !== "object") return gathered;
    const { variables, streams } = gathered;
    if ((this.dragged = draggedHeader(this.hurrySince, now))) this.log("a kept connection's hurried header dragged on: the connection ends with this request");
    const over = streams ? bodyOverLimit(this.config.options, Number(valueOf(variables, "CONTENT_LENGTH")), "declared") : undefined;
    this.body.start(now);
    if (streams && !over) return this.run(variables, "pipe", now);
    if (over) this.log(over);
    this.phase = "spooling";
    this.spooled = variables;
    if (over) this.body.refuse(now, TOO_LARGE);
    return undefined;
  }

  private run(variables: Variable[], stdin: BodyKind, now: number): undefined {
    this.phase = "running";
    this.movedAt = now;
    this.clock.start(now);
    if (stdin !== "pipe") this.bodyEnded = true;
    const answer = this.effects.start(variables, stdin);
    if (answer === undefined) return undefined;
    if (!this.bodyEnded) {
      // Nothing runs (--cgi-root's 404 or 403, a program that cannot start): its body is refused (paramsRecord).
      this.phase = "spooling";
      this.body.refuse(now, answer);
      return undefined;
    }
    this.effects.send(encodeRecord(TYPE.STDOUT, this.requestId, answer));
    this.complete(answer === BAD_GATEWAY ? 1 : 0, now);
    return undefined;
  }

  private stdin(content: Uint8Array, now: number): string | undefined {
    if (this.phase === "spooling") return this.spoolStdin(content, now);
    if (this.phase !== "running") return "STDIN before the end of PARAMS";
    if (this.bodyEnded) return undefined; // after its end (or an abort): nothing more goes to the program
    if (content.length === 0) {
      this.bodyEnded = true;
      this.effects.endBody(false);
      return undefined;
    }
    this.body.came(content.length, now);
    // More than its CONTENT_LENGTH, which was within the limit: not a web server's doing.
    const over = bodyOverLimit(this.config.options, this.body.received, "received");
    if (over) return over;
    this.effects.writeBody(content);
    return undefined;
  }

  /**
   * A record of a spooled body; the empty one starts the program with the file as its stdin and CONTENT_LENGTH its
   * size (the web server's own, empty or absent, stays when there is none). A refused body is dropped, within what
   * is left of its deadline, then answered: past --max-body, the rest; without a program (run), up to --max-body, as stdin.
   */
  private spoolStdin(content: Uint8Array, now: number): string | undefined {
    if (content.length === 0) {
      if (this.body.refused) {
        this.effects.send(encodeRecord(TYPE.STDOUT, this.requestId, this.body.refused));
        this.bodyEnded = true;
        return void this.complete(this.body.refused === BAD_GATEWAY ? 1 : 0, now);
      }
      const variables = this.spooled;
      this.spooled = NO_VARIABLES;
      if (this.spoolSize === 0) return this.run(variables, "none", now);
      return this.run([...variables.filter(([name]) => name !== "CONTENT_LENGTH"), ["CONTENT_LENGTH", String(this.spoolSize)]], "spool", now);
    }
    this.body.came(content.length, now); // what came, kept or dropped: the body's deadline counts it
    if (this.body.refused) return this.body.refused === TOO_LARGE ? undefined : bodyOverLimit(this.config.options, this.body.received, "received");
    const over = bodyOverLimit(this.config.options, this.spoolSize + content.length, "received");
    if (over || !this.effects.spoolFile.write(content)) { // the write says why it refused (the bodies on disk)
      if (over) this.log(over);
      this.body.refuse(now, over ? TOO_LARGE : UNAVAILABLE);
      this.effects.spoolFile.close();
      return undefined;
    }
    this.spoolSize += content.length;
    return undefined;
  }

  private abort(now: number): void {
    if (this.phase !== "running") {
      // Not started yet: nothing to kill, the request just ends (and the header deadline runs on: aborting is
      // no way to restart it). Aborted while its body was spooled: the header was complete, its deadline over.
      const spooling = this.phase === "spooling";
      if (spooling) this.effects.spoolFile.close();
      this.bodyEnded = true;
      return this.complete(0, now, spooling);
    }
    this.log(`request ${this.requestId} aborted by the web server`);
    this.bodyEnded = true;
    // TERM before the EOF: a program waiting for its body's end must not take the EOF for a complete request and
    // answer. The EOF all the same: a child of the program reading its stdin must not keep the output open.
    this.effects.stopProgram();
    this.effects.endBody(true);
  }

  /** The empty STDOUT, END_REQUEST, then the next request or the end of the connection. */
  private complete(status: number, now: number, served = true): void {
    this.phase = "none";
    this.spooled = NO_VARIABLES;
    dropParams(this.held);
    if (this.over) return;
    // A stopping process's kept connection ends with this END_REQUEST, the connection's end in the same segment; a
    // retired worker's stays the web server's to close (fastcgi-engine.ts: any close of ours can cross its next request).
    const kept = this.keep && !this.peerEnded && (this.retiring || (this.leavingSince === undefined && !this.dragged));
    // One write for both: the web server gets the end in one segment.
    this.effects.send(endOfRequest(this.requestId, status, STATUS.REQUEST_COMPLETE), !kept);
    if (kept) {
      this.lastEnd = this.quietSince = now;
      if (served) {
        this.headerFrom = now;
        this.hurrySince = undefined;
      }
      return;
    }
    this.end();
    if (served) this.headerFrom = now;
  }

  /** No further request: the connection closes once what is queued has gone (`why`: the -v line). */
  private end(why?: string): void {
    if (why !== undefined) this.log(why);
    if (this.ending) return;
    this.ending = true;
    this.effects.end();
  }

  private log(line: string): void {
    gatewayLog(this.config.options, "fastcgi", line);
  }
}
