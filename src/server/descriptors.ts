// Descriptor exhaustion in the classic server. Bun's listener accepts as
// long as the listening socket is readable; with no descriptor left, every
// connection fails on its way to the program (pidfd_open or pipe gets
// EMFILE: strace showed 145 such failures and resets for 200 clients under
// `ulimit -n 64`), or accept() itself fails and the loop spins. So the
// server stops accepting while a connection could not get what it needs,
// says so once, and accepts again when connections end; the kernel's
// backlog holds the waiting connects meanwhile.
import { descriptorLimit } from "../system/fd.ts";
import { warn } from "../system/log.ts";
import { fs } from "../system/builtins.ts";

/**
 * The most a connection holds at once: its socket, three pipes for the copy
 * loop (six ends while the program starts), the program's pidfd, the
 * watchdog's copy of the socket.
 */
const RESERVE = 8;
/** What a live connection is assumed to hold, to know when counting is worth it (the copy loop's socket, three pipes, pidfd). */
const PER_CONNECTION = 5;

function openDescriptors(): number {
  try {
    return fs().readdirSync("/proc/self/fd").length - 1; // the directory's own descriptor
  } catch {
    return Number.POSITIVE_INFINITY; // cannot even open a directory: certainly none left
  }
}

export class DescriptorGuard {
  private readonly limit = descriptorLimit();
  private readonly baseline = openDescriptors();
  private active = 0;
  private paused = false;
  /**
   * Said once per shortage: under steady pressure the server pauses and
   * resumes with every connection that ends, which is no news. A shortage
   * is over when at most half the limit is in use.
   */
  private short = false;

  constructor(
    private readonly pause: () => void,
    private readonly resume: () => void,
    private readonly log: (line: string) => void,
  ) {}

  /**
   * Whether the connection in hand and one more could not get RESERVE each. Counting
   * /proc/self/fd costs a directory read, so it is done only when a
   * generous estimate comes near the limit: the fast path pays nothing.
   */
  private full(): { full: boolean; open: number } {
    const estimate = this.baseline + this.active * PER_CONNECTION;
    if (estimate + 3 * RESERVE < this.limit) return { full: false, open: estimate };
    const open = openDescriptors();
    // Room for the connection in hand and for one more.
    return { full: open + 2 * RESERVE > this.limit, open };
  }

  /** A connection was accepted: stop accepting if the next one could not be served. */
  opened(): void {
    this.active++;
    if (this.paused) return;
    const { full, open } = this.full();
    if (!full) return;
    this.paused = true;
    this.pause();
    if (this.short) return;
    // A shortage the rate limit kept quiet gets no end line either: each "freed" answers an "out of descriptors".
    this.short = warn("descriptors", `out of descriptors (${open} open, limit ${this.limit}): not accepting until one is freed`);
  }

  /** A connection ended: accept again once a connection fits. */
  closed(): void {
    this.active--;
    if (!this.paused && !this.short) return;
    const { full, open } = this.full();
    if (full) return;
    if (this.paused) {
      this.paused = false;
      this.resume();
    }
    if (this.short && open <= this.limit / 2) {
      this.short = false;
      this.log(`descriptors freed (${open} open, limit ${this.limit}): the shortage is over`);
    }
  }
}
