// The one way socket is compiled, for `npm run build` (dist/socket) and for
// scripts/release.ts (each target). --bytecode stores JavaScriptCore's
// bytecode in the executable, so a start does not parse the bundle again:
// `socket -version` went from 30-40 ms to 12-14 ms (hyperfine), and every
// worker a pool starts pays that start. The commit is stamped with --define
// (src/version.ts).
import { resolve } from "node:path";

export const ROOT = resolve(import.meta.dir, "..");

function git(...args: string[]): string | undefined {
  const r = Bun.spawnSync(["git", ...args], { cwd: ROOT, stdout: "pipe", stderr: "ignore" });
  return r.exitCode === 0 ? r.stdout.toString().trim() : undefined;
}

/** The short commit of HEAD, "-dirty" when tracked files differ from it; "unknown" outside git. */
export function buildCommit(): string {
  const head = git("rev-parse", "--short", "HEAD");
  if (!head) return "unknown";
  return git("status", "--porcelain", "--untracked-files=no") ? `${head}-dirty` : head;
}

/**
 * The entry (it chooses the program before loading it) and each program,
 * compiled as bundles of their own (ES modules) into the one executable:
 * the entry imports a program's bundle by its name (src/entry.ts), so a
 * start reads the entry and its own program's bytecode only. Each bundle
 * is whole (the few modules the entry shares with a program are in both),
 * not split into chunks: with --splitting and --bytecode a pool worker
 * crashed in Bun under load (docs/DESIGN.md, "The start"). Inside a
 * program a dynamic import is evaluated only when it runs. Shared with
 * test/startup.test.ts, which bundles the same way to check what a start
 * evaluates.
 */
export const ENTRY = "src/entry.ts";
export const PROGRAMS = ["src/main.ts", "src/worker-main.ts"];
export const BUNDLE_FLAGS = ["--format=esm", "--minify"];

/**
 * Compiles ENTRY to `outfile`; `target` e.g. "bun-linux-arm64" (default:
 * this machine); `metafile`: where to write the bundler's account of the
 * chunks, which modules each holds and imports (test/startup.test.ts).
 */
export async function compile(outfile: string, target?: string, commit = buildCommit(), metafile?: string): Promise<void> {
  const command = [
    process.execPath, "build", "--compile", "--bytecode", ...BUNDLE_FLAGS, "--sourcemap=none",
    "--define", `BUILD_COMMIT=${JSON.stringify(commit)}`,
    // A compiled executable would otherwise read bunfig.toml and .env from
    // the directory it is started in: a bunfig.toml's `preload` ran its code
    // inside socket, and a .env set variables every -p program inherits.
    "--no-compile-autoload-bunfig", "--no-compile-autoload-dotenv",
    ...(target ? [`--target=${target}`] : []),
    ...(metafile ? [`--metafile=${metafile}`] : []),
    ENTRY, ...PROGRAMS, "--outfile", outfile,
  ];
  // Asynchronous, so that a release compiles its targets side by side.
  const status = await Bun.spawn(command, { cwd: ROOT, stdout: "inherit", stderr: "inherit" }).exited;
  if (status !== 0) throw new Error(`bun build failed (exit ${status}) for ${target ?? "this machine"}`);
}

if (import.meta.main) await compile(process.argv[2] ?? "dist/socket");
