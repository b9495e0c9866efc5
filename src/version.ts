// package.json holds the one version: bun inlines this import at build time.
// BUILD_COMMIT is the commit the executable was built from, set by
// scripts/build.ts with `bun build --define`; a build outside git (or a run
// from the sources) says "unknown".
import pkg from "../package.json" with { type: "json" };

declare const BUILD_COMMIT: string | undefined;

export const NAME = "socket";
export const VERSION: string = pkg.version;
export const COMMIT: string = typeof BUILD_COMMIT === "string" && BUILD_COMMIT !== "" ? BUILD_COMMIT : "unknown";
/** What -version prints: socket(1)'s line, then where this build came from. */
export const VERSION_LINE = `${NAME} version ${VERSION} (commit ${COMMIT})\n`;
/** socket(1)'s `-version`: asked as the first word, whatever follows (entry.ts answers it before loading the rest). */
export const asksVersion = (argv: readonly string[]): boolean => argv[0] === "-version";
