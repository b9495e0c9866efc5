/**
 * How to start this same program again (a pool worker, the -b daemon):
 * the compiled executable itself, or bun with the entry script in development.
 */
export function selfCommand(): string[] {
  return Bun.main.startsWith("/$bunfs/") ? [process.execPath] : [process.execPath, Bun.main];
}

/** The directory socket started in (-b's daemon moves to /): a USR2 successor starts there, so relative paths mean what they meant. */
export const startDir = process.cwd();
