// The FastCGI responder's rules, without sockets or processes: each record
// in each state of a request, the deadlines it gives as data, completion
// and keeping the connection, --max-body and the spooled body. The engines
// that drive it (pool workers', -f's) are tested end to end elsewhere.
import { describe, expect, test } from "bun:test";
import { decodePairs, encodePairs, encodeRecord, RecordReader, STATUS, TYPE, type FcgiRecord } from "../src/request/fastcgi-records.ts";
import { FastCgiResponder } from "../src/request/fastcgi-responder.ts";
import { KEPT_HEADER_MS, KEPT_IDLE_MS, QUEUE_LIMIT, type BodyKind, type ResponderEffects } from "../src/request/fastcgi-engine.ts";
import { BAD_GATEWAY, HEADER_TIMEOUT_MS, MIN_BODY_RATE, TOO_LARGE, UNAVAILABLE, type Variable } from "../src/request/cgi.ts";
import type { GatewayOptions } from "../src/options.ts";
import { SendClock } from "../src/request/fastcgi-engine.ts";

type Call = [name: string, ...args: unknown[]];

/** An engine that does nothing but write down what it was told, in order. */
class Recorder implements ResponderEffects {
  calls: Call[] = [];
  sent: FcgiRecord[] = [];
  answer: Uint8Array | undefined;
  waiting = 0;
  readonly sending = new SendClock();
  /** Whether the engine was told that the last bytes sent end the connection. */
  lastSent = false;
  private readonly reader = new RecordReader();
  send(bytes: Uint8Array, last = false): void {
    this.lastSent ||= last;
    const records = this.reader.push(bytes);
    if ("error" in records) throw new Error(records.error);
    this.sent.push(...records);
  }
  queued(): number {
    return this.waiting;
  }
  start(variables: Variable[], stdin: BodyKind): Uint8Array | undefined {
    this.calls.push(["start", Object.fromEntries(variables.map(([n, v]) => [n, v])), stdin]);
    return this.answer;
  }
  writeBody(bytes: Uint8Array): void {
    this.calls.push(["writeBody", new TextDecoder().decode(bytes)]);
  }
  endBody(drop: boolean): void {
    this.calls.push(["endBody", drop]);
  }
  /** Bytes the disk takes before a spool write is refused (the bodies on disk at their limit). */
  diskRoom = Infinity;
  readonly spoolFile = {
    write: (bytes: Uint8Array) => {
      if (bytes.length > this.diskRoom) return false;
      this.diskRoom -= bytes.length;
      this.calls.push(["spool", bytes.length]);
      return true;
    },
    close: () => void this.calls.push(["dropSpool"]),
  };
  readonly stopProgram = (): void => void this.calls.push(["stopProgram"]);
  program() {
    return { pid: 42, script: "/srv/app.cgi", request: "GET /app.cgi?x=1" };
  }
  readonly end = (): void => void this.calls.push(["end"]);
  readonly drop = (): void => void this.calls.push(["drop"]);
  names(): string[] {
    return this.calls.map(([name]) => name);
  }
  types(): number[] {
    return this.sent.map((r) => r.type);
  }
}

const options = (more: Partial<GatewayOptions> = {}): GatewayOptions => ({ verbose: false, timeoutMs: undefined, requestTimeoutMs: undefined, sendTimeoutMs: undefined, passEnv: [], maxBody: 1000, cgiStderr: "web", pool: undefined, ...more });

/** A responder at time 0 with its recorder; `pool` for a pool worker's rules. */
function responder(more: Partial<GatewayOptions> = {}, pool = false) {
  const effects = new Recorder();
  return { effects, fcgi: new FastCgiResponder({ options: options(more), maxConns: 4, pool }, effects, 0) };
}

const begin = (id: number, keep = true, role = 1) => encodeRecord(TYPE.BEGIN_REQUEST, id, new Uint8Array([role >> 8, role & 0xff, keep ? 1 : 0, 0, 0, 0, 0, 0]));
const params = (id: number, pairs: Variable[]) => Buffer.concat([encodeRecord(TYPE.PARAMS, id, encodePairs(pairs)), encodeRecord(TYPE.PARAMS, id)]);
const stdin = (id: number, text = "") => encodeRecord(TYPE.STDIN, id, new TextEncoder().encode(text));
const header = (id: number, length?: number) => Buffer.concat([begin(id), params(id, length === undefined ? [["SCRIPT_NAME", "/x"]] : [["CONTENT_LENGTH", String(length)]])]);

/** The END_REQUEST records sent: [request id, app status, protocol status]. */
const ends = (effects: Recorder) =>
  effects.sent.filter((r) => r.type === TYPE.END_REQUEST).map((r) => [r.requestId, new DataView(r.content.buffer, r.content.byteOffset).getUint32(0), r.content[4]]);

describe("a request's states", () => {
  test("BEGIN, PARAMS, STDIN to its end: the program starts, takes the body, and its exit ends the request", () => {
    const { effects, fcgi } = responder();
    fcgi.input(header(1, 5), 10);
    expect(fcgi.phase).toBe("running");
    expect(effects.calls[0]).toEqual(["start", { CONTENT_LENGTH: "5" }, "pipe"]);
    fcgi.input(Buffer.concat([stdin(1, "hello"), stdin(1)]), 11);
    expect(effects.calls.slice(1)).toEqual([["writeBody", "hello"], ["endBody", false]]);
    expect(fcgi.bodyEnded).toBe(true);
    fcgi.exited(3, 12);
    expect(effects.types()).toEqual([TYPE.STDOUT, TYPE.END_REQUEST]);
    expect(effects.sent[0].content.length).toBe(0);
    expect(ends(effects)).toEqual([[1, 3, STATUS.REQUEST_COMPLETE]]);
    expect(fcgi.phase).toBe("none");
    expect(fcgi.ending).toBe(false); // FCGI_KEEP_CONN: the next request may follow
  });

  test("without FCGI_KEEP_CONN the connection ends after END_REQUEST", () => {
    const { effects, fcgi } = responder();
    fcgi.input(Buffer.concat([begin(1, false), params(1, [["CONTENT_LENGTH", "0"]]), stdin(1)]), 0);
    fcgi.exited(0, 1);
    expect(effects.names()).toEqual(["start", "endBody", "end"]);
    expect(fcgi.ending).toBe(true);
  });

  test("a kept connection serves the next request, any id", () => {
    const { effects, fcgi } = responder();
    fcgi.input(Buffer.concat([header(1, 0), stdin(1)]), 0);
    fcgi.exited(0, 1);
    fcgi.input(Buffer.concat([header(7, 0), stdin(7)]), 2);
    expect(fcgi.phase).toBe("running");
    fcgi.exited(0, 3);
    expect(ends(effects).map(([id]) => id)).toEqual([1, 7]);
    expect(effects.names().filter((n) => n === "start").length).toBe(2);
  });

  test("a second BEGIN_REQUEST while one runs is refused with CANT_MPX_CONN; the same id again drops the connection", () => {
    const { effects, fcgi } = responder();
    fcgi.input(header(1, 0), 0);
    fcgi.input(begin(2), 1);
    expect(ends(effects)).toEqual([[2, 0, STATUS.CANT_MPX_CONN]]);
    expect(fcgi.phase).toBe("running");
    fcgi.input(begin(1), 2);
    expect(effects.names().at(-1)).toBe("drop");
    expect(fcgi.over).toBe(true);
  });

  test("a role other than the responder is refused with UNKNOWN_ROLE", () => {
    const { effects, fcgi } = responder();
    fcgi.input(begin(1, false, 2), 0);
    expect(ends(effects)).toEqual([[1, 0, STATUS.UNKNOWN_ROLE]]);
    expect(effects.names()).toEqual(["end"]);
  });

});

describe("records out of place", () => {
  test("PARAMS after the end of PARAMS drops the connection, and the program with it", () => {
    const { effects, fcgi } = responder();
    fcgi.input(header(1, 3), 0);
    fcgi.input(encodeRecord(TYPE.PARAMS, 1, encodePairs([["A", "b"]])), 1);
    expect(effects.names()).toEqual(["start", "drop"]);
  });

  test("STDIN before the end of PARAMS drops the connection", () => {
    const { effects, fcgi } = responder();
    fcgi.input(Buffer.concat([begin(1), stdin(1, "x")]), 0);
    expect(effects.names()).toEqual(["drop"]);
  });

  test("records of another request, and DATA, are ignored; an unknown type is answered", () => {
    const { effects, fcgi } = responder();
    fcgi.input(Buffer.concat([header(1, 0), stdin(9, "x"), encodeRecord(TYPE.DATA, 1, new Uint8Array(3)), encodeRecord(42, 1)]), 0);
    expect(effects.names()).toEqual(["start"]);
    expect(effects.types()).toEqual([TYPE.UNKNOWN_TYPE]);
    expect(effects.sent[0].content[0]).toBe(42);
  });

  test("GET_VALUES is answered with what it asks for, the pool's size as the limits", () => {
    const { effects, fcgi } = responder();
    fcgi.input(encodeRecord(TYPE.GET_VALUES, 0, encodePairs([["FCGI_MAX_CONNS", ""], ["FCGI_MPXS_CONNS", ""], ["OTHER", ""]])), 0);
    expect(effects.types()).toEqual([TYPE.GET_VALUES_RESULT]);
    const answer = decodePairs(effects.sent[0].content);
    expect(answer).toEqual([["FCGI_MAX_CONNS", "4"], ["FCGI_MPXS_CONNS", "0"]]);
  });

  test("a record the application sends, or a malformed stream, drops the connection", () => {
    for (const bytes of [encodeRecord(TYPE.STDOUT, 1), new Uint8Array([2, 1, 0, 1, 0, 0, 0, 0])]) {
      const { effects, fcgi } = responder();
      fcgi.input(bytes, 0);
      expect(effects.names()).toEqual(["drop"]);
    }
  });

  test("replies the web server does not read, past QUEUE_LIMIT, drop the connection", () => {
    const { effects, fcgi } = responder();
    effects.waiting = QUEUE_LIMIT + 1;
    fcgi.input(encodeRecord(42, 0), 0);
    expect(effects.names()).toEqual(["drop"]);
  });

  test("a program that cannot run: its answer once its body has been read and dropped, END_REQUEST with status 1 for a 502", () => {
    const failed = responder();
    failed.effects.answer = BAD_GATEWAY;
    failed.fcgi.input(Buffer.concat([header(1, 0), stdin(1)]), 0);
    expect(ends(failed.effects)).toEqual([[1, 1, STATUS.REQUEST_COMPLETE]]);
    const { effects, fcgi } = responder();
    effects.answer = new TextEncoder().encode("Status: 404 Not Found\r\n\r\n");
    fcgi.input(header(1, 4), 0);
    expect(effects.sent).toEqual([]); // not before the body's end: a close with it unread would reset the answer
    fcgi.input(Buffer.concat([stdin(1, "body"), stdin(1)]), 1);
    expect(effects.types()).toEqual([TYPE.STDOUT, TYPE.STDOUT, TYPE.END_REQUEST]);
    expect(ends(effects)).toEqual([[1, 0, STATUS.REQUEST_COMPLETE]]);
    expect(effects.names()).toEqual(["start"]); // the body went nowhere
  });
});

describe("aborts", () => {
  test("in the header: the request ends, and the header deadline runs on", () => {
    const { effects, fcgi } = responder();
    fcgi.input(begin(1), 100);
    const before = fcgi.deadline();
    fcgi.input(encodeRecord(TYPE.ABORT_REQUEST, 1), 200);
    expect(ends(effects)).toEqual([[1, 0, STATUS.REQUEST_COMPLETE]]);
    expect(fcgi.deadline()).toEqual(before!);
    expect(before!.at).toBe(HEADER_TIMEOUT_MS);
  });

  test("while its body is spooled: the spool goes, and a new header deadline starts", () => {
    const { effects, fcgi } = responder();
    fcgi.input(Buffer.concat([header(1), stdin(1, "abc")]), 100);
    fcgi.input(encodeRecord(TYPE.ABORT_REQUEST, 1), 200);
    expect(effects.names()).toEqual(["spool", "dropSpool"]);
    expect(ends(effects).length).toBe(1);
    expect(fcgi.deadline()).toEqual({ at: 200 + HEADER_TIMEOUT_MS, why: "no complete request in time" });
  });

  test("while the program runs: it is told to stop, then its body ends, and its exit ends the request", () => {
    const { effects, fcgi } = responder();
    fcgi.input(Buffer.concat([header(1, 9), stdin(1, "abc")]), 0);
    fcgi.input(encodeRecord(TYPE.ABORT_REQUEST, 1), 1);
    expect(effects.names()).toEqual(["start", "writeBody", "stopProgram", "endBody"]);
    expect(effects.calls[3]).toEqual(["endBody", true]);
    expect(ends(effects)).toEqual([]);
    fcgi.input(stdin(1, "more"), 2); // after the abort nothing more goes to the program
    expect(effects.names().length).toBe(4);
    fcgi.exited(143, 3);
    expect(ends(effects)).toEqual([[1, 143, STATUS.REQUEST_COMPLETE]]);
  });

  test("an abort for another request is ignored", () => {
    const { effects, fcgi } = responder();
    fcgi.input(begin(1), 0);
    fcgi.input(encodeRecord(TYPE.ABORT_REQUEST, 2), 1);
    expect(effects.sent).toEqual([]);
    expect(fcgi.phase).toBe("params");
  });

  test("the web server's close in the body aborts the request; after the body the program goes on", () => {
    const mid = responder();
    mid.fcgi.input(Buffer.concat([header(1, 9), stdin(1, "abc")]), 0);
    mid.fcgi.peerClosed();
    expect(mid.effects.names()).toEqual(["start", "writeBody", "endBody", "end"]);
    expect(mid.effects.calls[2]).toEqual(["endBody", true]);
    const after = responder();
    after.fcgi.input(Buffer.concat([header(1, 3), stdin(1, "abc"), stdin(1)]), 0);
    after.fcgi.peerClosed();
    expect(after.effects.names()).toEqual(["start", "writeBody", "endBody", "endBody"]);
    expect(after.fcgi.ending).toBe(false);
    after.fcgi.exited(0, 1);
    expect(after.fcgi.ending).toBe(true); // no next request after the web server's end
  });
});

describe("--max-body and bodies without CONTENT_LENGTH", () => {
  test("no CONTENT_LENGTH: the body is spooled, then the program runs with its size", () => {
    const { effects, fcgi } = responder();
    fcgi.input(Buffer.concat([header(1), stdin(1, "abc"), stdin(1, "de")]), 0);
    expect(fcgi.phase).toBe("spooling");
    fcgi.input(stdin(1), 1);
    expect(effects.calls).toEqual([["spool", 3], ["spool", 2], ["start", { SCRIPT_NAME: "/x", CONTENT_LENGTH: "5" }, "spool"]]);
    expect(fcgi.bodyEnded).toBe(true);
  });

  test("an empty spooled body: no file, nothing on stdin", () => {
    const { effects, fcgi } = responder();
    fcgi.input(Buffer.concat([header(1), stdin(1)]), 0);
    expect(effects.calls).toEqual([["start", { SCRIPT_NAME: "/x" }, "none"]]);
  });

  test("a CONTENT_LENGTH over --max-body: the body is read and dropped to its end, then 413", () => {
    const { effects, fcgi } = responder({ maxBody: 4 });
    fcgi.input(Buffer.concat([header(1, 5), stdin(1, "abcde")]), 0);
    expect(effects.calls).toEqual([]);
    fcgi.input(stdin(1), 1);
    expect(effects.types()).toEqual([TYPE.STDOUT, TYPE.STDOUT, TYPE.END_REQUEST]);
    expect(new TextDecoder().decode(effects.sent[0].content)).toBe(new TextDecoder().decode(TOO_LARGE));
  });

  test("a spooled body that grows past --max-body: its file goes, the rest is dropped, then 413", () => {
    const { effects, fcgi } = responder({ maxBody: 4 });
    fcgi.input(Buffer.concat([header(1), stdin(1, "abc"), stdin(1, "de"), stdin(1, "fgh")]), 0);
    expect(effects.calls).toEqual([["spool", 3], ["dropSpool"]]);
    fcgi.input(stdin(1), 1);
    expect(ends(effects).length).toBe(1);
    expect(effects.sent[0].content.length).toBe(TOO_LARGE.length);
  });

  test("a spooled body the disk has no room for (bodies on disk at their limit): its file goes, the rest is dropped, then 503", () => {
    const { effects, fcgi } = responder({ maxBody: 100 });
    effects.diskRoom = 4;
    fcgi.input(Buffer.concat([header(1), stdin(1, "abc"), stdin(1, "de"), stdin(1, "fgh")]), 0);
    expect(effects.calls).toEqual([["spool", 3], ["dropSpool"]]);
    fcgi.input(stdin(1), 1);
    expect(ends(effects).length).toBe(1);
    expect(new TextDecoder().decode(effects.sent[0].content)).toBe(new TextDecoder().decode(UNAVAILABLE));
  });

  test("a streamed body longer than its CONTENT_LENGTH past --max-body drops the connection", () => {
    const { effects, fcgi } = responder({ maxBody: 4 });
    fcgi.input(Buffer.concat([header(1, 4), stdin(1, "abcd"), stdin(1, "e")]), 0);
    expect(effects.names()).toEqual(["start", "writeBody", "drop"]);
  });
});

describe("deadlines as data", () => {
  test("the header's is absolute: bytes arriving do not move it", () => {
    const { fcgi } = responder();
    expect(fcgi.deadline()).toEqual({ at: HEADER_TIMEOUT_MS, why: "no complete request in time" });
    fcgi.input(begin(1).subarray(0, 5), 1000);
    fcgi.input(begin(1).subarray(5), 2000);
    expect(fcgi.deadline()!.at).toBe(HEADER_TIMEOUT_MS);
  });

  test("--timeout, when smaller, bounds the header; once the program has its body, every byte moved restarts it", () => {
    const { fcgi } = responder({ timeoutMs: 500 });
    expect(fcgi.deadline()!.at).toBe(500);
    fcgi.input(header(1, 3), 100);
    fcgi.input(Buffer.concat([stdin(1, "abc"), stdin(1)]), 300);
    expect(fcgi.deadline()).toEqual({ at: 800, why: "connection timed out" });
    fcgi.moved(700);
    expect(fcgi.deadline()!.at).toBe(1200);
  });

  test("without --timeout a program that has all its body has no deadline", () => {
    const { fcgi } = responder();
    fcgi.input(Buffer.concat([header(1, 0), stdin(1)]), 0);
    expect(fcgi.deadline()).toBeUndefined();
  });

  test("a streamed body comes at the least rate after its first 30 s; time the program did not take it does not count", () => {
    const { fcgi } = responder();
    fcgi.input(header(1, 1000), 100);
    const slow = "the request's body came too slowly";
    expect(fcgi.deadline()).toEqual({ at: 100 + HEADER_TIMEOUT_MS, why: slow });
    fcgi.input(stdin(1, "x".repeat(500)), 5000);
    expect(fcgi.deadline()).toEqual({ at: 100 + HEADER_TIMEOUT_MS + (500 * 1000) / MIN_BODY_RATE, why: slow });
    fcgi.body.pause(6000);
    expect(fcgi.deadline()).toBeUndefined();
    fcgi.body.resume(9000);
    expect(fcgi.deadline()!.at).toBe(100 + HEADER_TIMEOUT_MS + (500 * 1000) / MIN_BODY_RATE + 3000);
  });

  test("a spooled body's deadline counts from the header's end, not from each record", () => {
    const { fcgi } = responder();
    fcgi.input(header(1), 100);
    const slow = "the request's body came too slowly";
    expect(fcgi.deadline()).toEqual({ at: 100 + HEADER_TIMEOUT_MS, why: slow });
    fcgi.input(stdin(1, "a"), 5000);
    expect(fcgi.deadline()).toEqual({ at: 100 + HEADER_TIMEOUT_MS + 1000 / MIN_BODY_RATE, why: slow });
  });

  test("after a request the next header's counts from its end", () => {
    const { fcgi } = responder();
    fcgi.input(Buffer.concat([header(1, 0), stdin(1)]), 0);
    fcgi.exited(0, 9000);
    expect(fcgi.deadline()).toEqual({ at: 9000 + HEADER_TIMEOUT_MS, why: "no complete request in time" });
  });

  test("at the next header's deadline a kept connection with nothing of it ends (its FIN after the answer the kernel holds); one with a header begun is dropped", () => {
    for (const begun of [false, true]) {
      const { effects, fcgi } = responder();
      fcgi.input(Buffer.concat([header(1, 0), stdin(1)]), 0);
      fcgi.exited(0, 10);
      if (begun) fcgi.input(begin(2).subarray(0, 3), 20);
      fcgi.expire(10 + HEADER_TIMEOUT_MS);
      expect(effects.names().at(-1)).toBe(begun ? "drop" : "end");
      // Ending, the web server has the limit again to take what is left, then the connection is dropped.
      if (!begun) expect(fcgi.deadline()).toEqual({ at: 10 + 2 * HEADER_TIMEOUT_MS, why: "connection timed out" });
    }
  });
});

describe("kept connections (pool workers' rules)", () => {
  const othersWait = () => true;

  test("while others wait, a quiet kept connection closes; a busy one's next header is hurried", () => {
    const { effects, fcgi } = responder({}, true);
    fcgi.input(Buffer.concat([header(1, 0), stdin(1)]), 0);
    fcgi.exited(0, 1000);
    expect(fcgi.between).toBe(true);
    fcgi.keptCheck(1000 + KEPT_IDLE_MS - 1, othersWait);
    expect(fcgi.deadline()).toEqual({ at: 1000 + KEPT_IDLE_MS - 1 + KEPT_HEADER_MS, why: "no complete request in time while another connection waits" });
    expect(fcgi.ending).toBe(false);
    fcgi.keptCheck(1000 + KEPT_IDLE_MS, othersWait);
    expect(fcgi.ending).toBe(true);
    expect(effects.names().at(-1)).toBe("end");
  });

  test("nobody waiting: a kept connection stays", () => {
    const { fcgi } = responder({}, true);
    fcgi.input(Buffer.concat([header(1, 0), stdin(1)]), 0);
    fcgi.exited(0, 1);
    fcgi.keptCheck(1_000_000, () => false);
    expect(fcgi.ending).toBe(false);
  });

  test("a leaving worker's kept connection ends with its next END_REQUEST, sent as the connection's last bytes", () => {
    const { effects, fcgi } = responder({}, true);
    fcgi.input(Buffer.concat([header(1, 0), stdin(1)]), 200);
    fcgi.exited(0, 300);
    expect(fcgi.ending).toBe(false);
    expect(effects.lastSent).toBe(false);
    fcgi.input(Buffer.concat([header(2, 0), stdin(2)]), 400);
    fcgi.leave(450);
    expect(fcgi.ending).toBe(false);
    fcgi.exited(0, 500);
    expect(fcgi.ending).toBe(true);
    expect(effects.lastSent).toBe(true);
    expect(effects.sent.at(-1)?.type).toBe(TYPE.END_REQUEST);
  });

  test("-f's leaving process closes an idle kept connection at once; a new one (its request comes once connected, its header hurried), or one in a request, after that request", () => {
    const whole = Buffer.concat([header(1, 0), stdin(1)]);
    for (const part of [-1 /* idle after a kept request */, 0, 5 /* in a BEGIN_REQUEST */, header(1, 0).length /* running */]) {
      const { fcgi } = responder();
      fcgi.input(part < 0 ? whole : whole.subarray(0, part), 0);
      if (part < 0) fcgi.exited(0, 0);
      fcgi.leave(1);
      expect({ ending: fcgi.ending, hurried: fcgi.deadline()?.at === 1 + KEPT_HEADER_MS }).toEqual({ ending: part < 0, hurried: part === 0 || part === 5 });
      if (part >= 0) fcgi.input(whole.subarray(part), 2);
      fcgi.exited(0, 3);
      expect(fcgi.ending).toBe(true);
    }
  });
});
