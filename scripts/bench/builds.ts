// Other builds of socket measured in the same run: a commit built from git
// (`git archive`, `npm ci`, `npm run build`) into the run's scratch
// directory, once per run whoever asks for it (startup.ts's previous
// release, launchers.ts's baseline), or an executable named by an
// environment variable (BENCH_PREVIOUS, BENCH_BASELINE) to skip the build.
// And the floor of any Bun executable: a one-line program compiled the way
// socket is (scripts/build.ts's flags).
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BUNDLE_FLAGS } from "../build.ts";
import { ROOT, log } from "./config.ts";
import type { Bench } from "./scenarios.ts";

/** An executable's path, or why it could not be made. */
export type Built = { path: string } | { why: string };

const built = new Map<string, Built>();

/** Runs a command; on failure, its last line of output as the reason. */
function run(argv: string[], cwd: string): string | undefined {
  const r = Bun.spawnSync(argv, { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode === 0) return undefined;
  const last = `${r.stdout.toString()}\n${r.stderr.toString()}`.trim().split("\n").pop() ?? "";
  return `\`${argv.join(" ")}\` failed (exit ${r.exitCode}): ${last}`;
}

function fromGit(b: Bench, commit: string, into: string): string | undefined {
  log(`building ${commit} from git (npm ci, npm run build)`);
  const dir = mkdtempSync(join(b.scratch, `build-${commit}-`));
  try {
    // git archive: a plain tree, nothing left in the repository's worktree list.
    const why =
      run(["sh", "-c", 'git archive "$1" | tar -x -C "$2"', "sh", commit, dir], ROOT) ??
      run(["npm", "ci", "--no-audit", "--no-fund"], dir) ??
      run(["npm", "run", "build"], dir);
    if (why) return why;
    copyFileSync(join(dir, "dist", "socket"), into);
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  } finally {
    rmSync(dir, { recursive: true, force: true }); // its node_modules is large
  }
}

/**
 * `commit`'s build as a private executable in the scratch directory (built
 * once per run, then the same path), or the executable `override` names.
 */
export function buildOf(b: Bench, commit: string, override: string | undefined): Built {
  const cached = built.get(commit);
  if (cached) return cached;
  const into = join(b.scratch, `socket-${commit}`);
  let why: string | undefined;
  try {
    if (override) copyFileSync(override, into);
    else why = fromGit(b, commit, into);
  } catch (e) {
    why = e instanceof Error ? e.message : String(e);
  }
  const result: Built = why ? { why: `${commit} could not be built: ${why}` } : { path: into };
  built.set(commit, result);
  return result;
}

/** The one-line program whose start is the floor of any Bun executable's. */
export const BUN_FLOOR_SOURCE = 'console.log("x")';

/** BUN_FLOOR_SOURCE compiled as scripts/build.ts compiles socket (--compile --bytecode, its BUNDLE_FLAGS), once per run. */
export function bunFloor(b: Bench): Built {
  const cached = built.get("bun-floor");
  if (cached) return cached;
  const source = join(b.scratch, "floor.ts");
  const into = join(b.scratch, "bun-floor");
  writeFileSync(source, `${BUN_FLOOR_SOURCE};\n`);
  const flags = ["--compile", "--bytecode", ...BUNDLE_FLAGS, "--sourcemap=none", "--no-compile-autoload-bunfig", "--no-compile-autoload-dotenv"];
  const why = run([process.execPath, "build", ...flags, source, "--outfile", into], b.scratch);
  const result: Built = why ? { why } : { path: into };
  built.set("bun-floor", result);
  return result;
}
