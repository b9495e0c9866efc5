// What a blocking engine has for its connection and has not sent yet: the
// bytes in order, written as far as the non-blocking socket takes them now,
// the rest when poll(2) says it takes more.
import { EAGAIN, EINTR } from "../system/ffi.ts";
import { trySend } from "../system/socket.ts";
import type { SendClock } from "../request/fastcgi-engine.ts";

export class SendQueue {
  private parts: Uint8Array[] = [];
  /** Bytes waiting, in all. */
  size = 0;

  push(bytes: Uint8Array): void {
    this.parts.push(bytes);
    this.size += bytes.length;
  }

  get empty(): boolean {
    return this.parts.length === 0;
  }

  /**
   * As much as `fd` takes now; false when the connection has gone (the caller closes it). `more`: held for what
   * follows (MSG_MORE). `sending` (--send-timeout) is told whether bytes still wait, and when some were taken.
   */
  flush(fd: number, more: boolean, sending: SendClock): boolean {
    while (this.parts.length > 0) {
      const head = this.parts[0];
      const sent = trySend(fd, head, more);
      if (sent === -EAGAIN) {
        sending.blocked(Date.now());
        return true;
      }
      if (sent === -EINTR) continue;
      if (sent < 0) return false;
      sending.took();
      this.size -= sent;
      if (sent < head.length) this.parts[0] = head.subarray(sent);
      else this.parts.shift();
    }
    return true;
  }

  /** Everything waiting, handed over (to the splice loop, which sends it between records). */
  take(): Uint8Array[] {
    const parts = this.parts;
    this.parts = [];
    this.size = 0;
    return parts;
  }
}
