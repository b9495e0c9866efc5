import { NAME } from "./version.ts";

/**
 * An error that ends socket with one line on stderr and a defined exit
 * status (SPEC section 4). Anything else reaching main is a bug.
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
