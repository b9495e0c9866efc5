// How long to wait before starting again something that keeps failing (a
// worker, a prestarted program): 100 ms, doubling with each failure in a
// row, up to 5 s, so nothing is ever restarted in a tight loop.
const FIRST_MS = 100;
const MAX_MS = 5000;

export class Backoff {
  private failures = 0;
  private until = 0;

  /** One more failure in a row: the next start waits longer. */
  fail(): void {
    this.failures++;
    this.until = Date.now() + Math.min(FIRST_MS * 2 ** (this.failures - 1), MAX_MS);
  }

  /** A success ends the run of failures. */
  reset(): void {
    this.failures = 0;
  }

  /** Milliseconds to wait before the next start (0: now). */
  delay(): number {
    return Math.max(0, this.until - Date.now());
  }
}
