import { NAME } from "./version.ts";

/**
 * An error that ends socket with one line on stderr and a defined exit
 * status. Anything else reaching main is a bug.
 */
export class Fatal extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }

  get text(): string {
    return `${NAME}: ${this.message}\n`;
  }
}

/** What a caught value says: an Error's message, anything else as text. */
export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A caught system error's code ("ENOENT"...), if it has one. */
export function errorCode(e: unknown): string | undefined {
  const code = typeof e === "object" && e !== null && "code" in e ? e.code : undefined;
  return typeof code === "string" ? code : undefined;
}

/** A caught system error's errno (Bun's are negative), if it has one. */
export function errorNumber(e: unknown): number | undefined {
  const errno = typeof e === "object" && e !== null && "errno" in e ? e.errno : undefined;
  return typeof errno === "number" ? errno : undefined;
}
