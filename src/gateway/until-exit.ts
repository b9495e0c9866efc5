// The output of a CGI on Bun's loop (-f's FastCGI) ends when its program
// exits, not when every writer of its pipes has gone: a process it left in
// the background (`cmd &`) holds them open, and the request must not wait
// for that. The pool's FastCGI does the same with poll(2) on a pidfd
// (fastcgi-output.ts); SCGI's answer, on either engine, ends at the
// program's exit too.

/**
 * After the exit, when a process the program started still runs, how long
 * a read may wait for a chunk before the output counts as over. What the
 * program wrote before it exited is in the pipe, readable at once: Bun's
 * loop reads it long before this, so only the background process's later
 * output is cut. A program that left nothing running is read to EOF, which
 * follows at once: no timer decides its end.
 */
export const EXIT_DRAIN_MS = 100;

const QUIET: unique symbol = Symbol("quiet");

/**
 * The stream's chunks until it ends, or until `exited` has resolved with
 * `lingers()` true (something the program started still runs) and a read
 * has waited EXIT_DRAIN_MS with nothing: then the stream is cancelled (a
 * background writer gets EPIPE). While the caller does not ask for the
 * next chunk nothing is read, and no time counts.
 */
export async function* untilExit<T extends Uint8Array>(stream: ReadableStream<T>, exited: Promise<unknown>, lingers: () => boolean): AsyncGenerator<T> {
  const reader = stream.getReader();
  let gone = false;
  const quiet = (): Promise<typeof QUIET> => Bun.sleep(EXIT_DRAIN_MS).then(() => QUIET);
  // One timer from the exit for the read then waiting; each later read starts its own.
  const afterExit = exited.then(() => (lingers() ? ((gone = true), quiet()) : new Promise<never>(() => {})));
  try {
    for (;;) {
      const next = reader.read();
      const got = await Promise.race([next, gone ? quiet() : afterExit]);
      if (got === QUIET) return;
      if (got.done) return;
      yield got.value;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** untilExit as a stream, for a reader that takes streams (the copy loop that answers an SCGI request on Bun's loop). */
export function streamUntilExit<T extends Uint8Array>(stream: ReadableStream<T>, exited: Promise<unknown>, lingers: () => boolean): ReadableStream<T> {
  const chunks = untilExit(stream, exited, lingers);
  return new ReadableStream<T>({
    async pull(controller) {
      const next = await chunks.next();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    async cancel() {
      await chunks.return(undefined);
    },
  });
}
