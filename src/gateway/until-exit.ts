// The output of a CGI on Bun's loop (-f's FastCGI) ends when its program
// exits, not when every writer of its pipes has gone: a process it left in
// the background (`cmd &`) holds them open, and the request must not wait
// for that. The pool's FastCGI does the same with poll(2) on a pidfd
// (fastcgi-output.ts); SCGI's answer, on either engine, ends at the
// program's exit too.

/**
 * After the exit, how long a read may wait for a chunk before the output
 * counts as over. What the program wrote before it exited is in the pipe,
 * readable at once, so only a background process's later output is cut; a
 * program that left nothing running is read to its EOF, which comes first.
 * Whatever still runs (in the program's group, or in a session of its own:
 * `setsid cmd &`) cannot hold the answer open.
 */
export const EXIT_DRAIN_MS = 100;

const QUIET: unique symbol = Symbol("quiet");

/**
 * The stream's chunks until it ends, or until `exited` has resolved and a
 * read has waited EXIT_DRAIN_MS with nothing: then the stream is cancelled
 * (a background writer gets EPIPE). While the caller does not ask for the
 * next chunk nothing is read, and no time counts.
 */
export async function* untilExit<T extends Uint8Array>(stream: ReadableStream<T>, exited: Promise<unknown>): AsyncGenerator<T> {
  const reader = stream.getReader();
  let gone = false;
  const quiet = (): Promise<typeof QUIET> => Bun.sleep(EXIT_DRAIN_MS).then(() => QUIET);
  // One timer from the exit for the read then waiting; each later read starts its own.
  const afterExit = exited.then(() => ((gone = true), quiet()));
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
export function streamUntilExit<T extends Uint8Array>(stream: ReadableStream<T>, exited: Promise<unknown>): ReadableStream<T> {
  const chunks = untilExit(stream, exited);
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
