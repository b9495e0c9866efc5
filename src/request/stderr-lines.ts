// A CGI's stderr as lines for socket's log: whole lines, each naming the
// program's pid and what ran, so that the lines of CGIs running at once in
// different processes can be told apart and never mix mid-line. Bytes in,
// lines out; the engines read the pipe and write each line (system/log.ts).
//
// Each line as written is at most LINE_BYTES, PIPE_BUF: one write(2) of it
// to a pipe (journald, a supervisor) is atomic, and --log is opened
// O_APPEND, so whole lines land whole whoever writes beside them. A longer
// line is cut and ends with CUT_MARK. Control characters are shown as "?"
// (shownPlain). What one request's program may add to
// the log is bounded (REQUEST_BUDGET, prefixes included): a CGI that writes
// without end must not fill the disk; past the budget its bytes are only
// counted, and one last line says how many were not logged. What goes to
// the web server instead (FastCGI's STDERR records) has the same bound
// (StderrBudget).

/** The most bytes of one line as written, prefix and newline included: PIPE_BUF on Linux. */
export const LINE_BYTES = 4096;
/** The most bytes one request's program may add to the log, prefixes included (the closing "dropped" line aside). */
export const REQUEST_BUDGET = 64 * 1024;
/** What ends a line that was cut at LINE_BYTES. */
export const CUT_MARK = " [cut]";
/** The most characters of the program's name in the prefix (its end kept): a long path must leave room for the line. */
const NAME_CHARS = 256;

const encoder = new TextEncoder();
const NEWLINE = 10;
const RETURN = 13;
const TAB = 9;
const QUESTION = 63;

/**
 * A program's bytes as the log shows them: a control character (but tab),
 * C0, DEL or C1 (U+0080-U+009F, as UTF-8), becomes "?", as in the prefix.
 * What a CGI prints may carry a client's bytes: a CR must not hide the
 * prefix on a terminal, nor an escape sequence reach the operator's
 * (Apache escapes its error log for the same reason). One byte for one,
 * so the line's length and its cut stay as they were.
 */
function shownPlain(line: Uint8Array, start: number, end: number): void {
  for (let i = start; i < end; i++) {
    const b = line[i];
    if ((b < 0x20 && b !== TAB) || b === 0x7f) line[i] = QUESTION;
    else if (b === 0xc2 && i + 1 < end && line[i + 1] >= 0x80 && line[i + 1] <= 0x9f) line[i] = line[++i] = QUESTION;
  }
}

/**
 * `cgi PID NAME: `, the name's end kept when it is long, its control
 * characters as "?": a file name with a newline must not forge a line.
 */
export function stderrPrefix(pid: number, name: string): string {
  const shown = name.length > NAME_CHARS ? `...${name.slice(-(NAME_CHARS - 3))}` : name;
  return `cgi ${pid} ${shown.replace(/[\x00-\x1f\x7f-\x9f]/g, "?")}: `;
}

/**
 * One request's stderr: feed() the bytes as they come, in chunks of any
 * size, and write each line it returns; end() once the output is over,
 * for the last line that had no newline and the count of what was not
 * logged (the rest of cut lines, everything past the budget).
 */
export class StderrLines {
  /** The line being gathered: the prefix, then up to `room` bytes of content, room for the mark and the newline. */
  private readonly line: Uint8Array;
  private readonly prefixBytes: number;
  private readonly room: number;
  private readonly prefix: string;
  private length = 0;
  /** In the rest of a cut line: skipped to its newline. */
  private skipping = false;
  /** The budget is spent: everything from here on is counted only. */
  private full = false;
  /** Bytes given out as lines, and the bytes of stderr they carry; every byte fed. */
  private written = 0;
  private logged = 0;
  private fed = 0;

  constructor(
    pid: number,
    name: string,
    private readonly budget = REQUEST_BUDGET,
    lineBytes = LINE_BYTES,
  ) {
    this.prefix = stderrPrefix(pid, name);
    const prefix = encoder.encode(this.prefix);
    this.prefixBytes = prefix.length;
    this.room = lineBytes - prefix.length - CUT_MARK.length - 1;
    if (this.room < 1) throw new RangeError("a line must have room past its prefix");
    this.line = new Uint8Array(lineBytes);
    this.line.set(prefix);
  }

  /** The complete lines these bytes end, each ready to write as it is. */
  feed(bytes: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    this.fed += bytes.length;
    for (let at = 0; at < bytes.length && !this.full; ) {
      const newline = bytes.indexOf(NEWLINE, at);
      const stop = newline < 0 ? bytes.length : newline;
      if (this.skipping) {
        if (newline < 0) break;
        this.skipping = false;
        at = newline + 1;
        continue;
      }
      const fits = Math.min(stop - at, this.room - this.length);
      this.line.set(bytes.subarray(at, at + fits), this.prefixBytes + this.length);
      this.length += fits;
      at += fits;
      if (at < stop) {
        // More of this line than fits: cut it (at a character's start), skip its rest.
        this.cutBefore(bytes[at]);
        this.emit(out, true, false);
        this.skipping = true;
      } else if (newline >= 0) {
        this.emit(out, false, true);
        at = newline + 1;
      }
    }
    return out;
  }

  /** The last line (it had no newline) and, when anything was not logged, one line saying how much. */
  end(): Uint8Array[] {
    const out: Uint8Array[] = [];
    if (this.length > 0 && !this.full) this.emit(out, false, false);
    this.length = 0;
    const dropped = this.fed - this.logged;
    if (dropped > 0) out.push(encoder.encode(`${this.prefix}... ${dropped} byte${dropped === 1 ? "" : "s"} of stderr dropped\n`));
    this.fed = this.logged; // said once
    return out;
  }

  /** Keeps the line from splitting a UTF-8 character when `next` (the first byte cut off) continues one. */
  private cutBefore(next: number): void {
    if ((next & 0xc0) !== 0x80) return;
    const start = this.prefixBytes;
    let keep = this.length;
    while (keep > 0 && this.length - keep < 3 && (this.line[start + keep - 1] & 0xc0) === 0x80) keep--;
    if (keep > 0 && this.line[start + keep - 1] >= 0xc0) this.length = keep - 1;
  }

  /** The gathered line out, with the mark when cut, if the budget has room for it; else the budget is spent. */
  private emit(out: Uint8Array[], cut: boolean, newline: boolean): void {
    let contentEnd = this.prefixBytes + this.length;
    if (newline && this.length > 0 && this.line[contentEnd - 1] === RETURN) contentEnd--; // a CRLF ends it as LF does
    shownPlain(this.line, this.prefixBytes, contentEnd);
    const size = contentEnd + (cut ? CUT_MARK.length : 0) + 1;
    const content = this.length;
    this.length = 0;
    if (this.written + size > this.budget) {
      this.full = true;
      return;
    }
    if (cut) encoder.encodeInto(CUT_MARK, this.line.subarray(contentEnd));
    this.line[size - 1] = NEWLINE;
    out.push(this.line.slice(0, size));
    this.written += size;
    this.logged += content + (newline ? 1 : 0);
  }
}

/**
 * A program's stderr sent to the web server (FastCGI's STDERR records, the
 * default): bounded per request as the log's lines are, since nginx writes
 * every record to its error log, and a CGI that writes without end must not
 * fill that disk either. take() each chunk as it comes; end() once the
 * output is over, for the one note saying how much did not go.
 */
export class StderrBudget {
  private left: number;
  private dropped = 0;

  constructor(budget = REQUEST_BUDGET) {
    this.left = budget;
  }

  /** The part of `bytes` that goes (empty once the budget is spent). */
  take(bytes: Uint8Array): Uint8Array {
    const n = Math.min(this.left, bytes.length);
    this.left -= n;
    this.dropped += bytes.length - n;
    return bytes.subarray(0, n);
  }

  /** The note, as the log's last line words it, when anything was held back (else no bytes); said once. */
  end(): Uint8Array {
    const dropped = this.dropped;
    this.dropped = 0;
    return dropped > 0 ? encoder.encode(`\n... ${dropped} byte${dropped === 1 ? "" : "s"} of stderr dropped\n`) : new Uint8Array(0);
  }
}
