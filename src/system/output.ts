// What the user asked for on stdout (-version, --help), written by Bun's
// own writer, which writes all of it (a pipe read slowly included) before
// the process exits. Not through process.stdout: creating that stream cost
// about 10 ms, twice a whole start; nor node:fs, which the entry does not
// load otherwise (entry.ts). Best effort, as before: a closed or full
// stdout loses the text, and the exit status stays what it was.
import type { BunFile } from "bun";

export async function output(text: string, to: BunFile = Bun.stdout): Promise<void> {
  try {
    await Bun.write(to, text);
  } catch {
    // nowhere left to say it
  }
}
