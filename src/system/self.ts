import { fs } from "./builtins.ts";

/**
 * How to start this same program again (a pool worker, the -b daemon):
 * the compiled executable itself, or bun with the entry script in development.
 */
export function selfCommand(): string[] {
  return Bun.main.startsWith("/$bunfs/") ? [process.execPath] : [process.execPath, Bun.main];
}

/**
 * This same image started again now (a pool worker, the -b daemon):
 * /proc/self/exe, which the new process resolves before its exec, not the
 * file at its path, which an upgrade may have replaced, nor that path as
 * Bun holds it (U+FFFD for bytes that are not UTF-8: no such file). USR2
 * runs the file at the path (succession.ts). From the source tree: bun and the entry script.
 */
export function imageCommand(): string[] {
  const self = selfCommand();
  return self.length === 1 ? ["/proc/self/exe"] : self;
}

/** The directory socket started in (-b's daemon moves to /): a USR2 successor starts there, so relative paths mean what they meant. */
export const startDir = process.cwd();

/**
 * Which of the last `count` command-line words (1-based) is the first
 * whose bytes are not UTF-8, or 0. Bun.argv holds U+FFFD in their place,
 * so such a word would name another program or another socket path than
 * the one given; /proc/self/cmdline still has the bytes.
 */
export function nonUtf8Word(count: number): number {
  let bytes: Buffer;
  try {
    bytes = fs().readFileSync("/proc/self/cmdline");
  } catch {
    return 0; // no /proc: nothing to compare with
  }
  const words: Buffer[] = [];
  for (let start = 0; start < bytes.length; ) {
    const end = bytes.indexOf(0, start);
    words.push(bytes.subarray(start, end < 0 ? bytes.length : end));
    start = end < 0 ? bytes.length : end + 1;
  }
  const strict = new TextDecoder("utf-8", { fatal: true });
  const given = words.slice(words.length - count);
  for (const [i, word] of given.entries()) {
    try {
      strict.decode(word);
    } catch {
      return i + 1;
    }
  }
  return 0;
}
