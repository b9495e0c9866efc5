// --cgi-root: a whole site of CGI programs behind one socket, the program
// chosen per request as fcgiwrap chooses it (fcgiwrap.c, get_cgi_filename),
// so that nginx configurations written for fcgiwrap work unchanged:
// SCRIPT_FILENAME when the web server sends it; else DOCUMENT_ROOT +
// SCRIPT_NAME, trimming path components from the end until an executable
// regular file is found, the rest becoming PATH_INFO. Unlike fcgiwrap, the
// program must lie inside the root (its real path, symlinks followed), and
// "no such program" is a 404 rather than a 403. What names the program to
// the CGI is socket's, not the request's: SCRIPT_FILENAME the program's real
// path, PATH_TRANSLATED derived inside the root or not set. cgiSource,
// here as the one place that chooses between -p and --cgi-root, gives
// prepareCgi (cgi.ts) the chooser: cgi.ts never imports this module.
import type { Stats } from "node:fs";
import { directProgram } from "../connection/command.ts";
import type { Options } from "../options.ts";
import { bytesOf, environmentRule, quoted, valueOf, variable, type CgiSource, type SiteProgram, type SiteRefusal, type Variable } from "./cgi.ts";
import { fs, nodePath } from "../system/builtins.ts";

export type { SiteProgram, SiteRefusal } from "./cgi.ts";

/** The root as given and as the kernel resolves it (a symlinked root may be named either way). */
export interface SiteRoot {
  dir: string;
  real: string;
}

/** The root, resolved (cli/parse.ts has checked it is a directory); a gateway's source resolves it once. */
export function siteRoot(dir: string): SiteRoot {
  return { dir: stripSlashes(nodePath().posix.resolve(dir)), real: fs().realpathSync.native(dir) };
}

/**
 * What a gateway runs, as the options name it (cli/parse.ts requires -p or
 * --cgi-root with a gateway), and what a pool worker reports (CgiSource).
 */
export function cgiSource(
  options: Pick<Options, "program" | "cgiRoot" | "passEnv">,
  reports: { noteRequest?: (request: string) => void; failed?: () => void; overdue?: () => void } = {},
): CgiSource {
  const root = options.cgiRoot === undefined ? undefined : siteRoot(options.cgiRoot);
  const program = root ? { choose: (variables: Variable[]) => chooseSiteProgram(root, variables) } : { command: directProgram(options.program!) };
  return { program, rule: environmentRule(options.passEnv ?? [], process.env), note: reports.noteRequest, failed: reports.failed, overdue: reports.overdue };
}

function stripSlashes(path: string): string {
  const stripped = path.replace(/\/+$/, "");
  return stripped === "" ? "/" : stripped;
}

function inside(path: string, dir: string): boolean {
  return dir === "/" || path === dir || path.startsWith(`${dir}/`);
}

/** Lexically inside the root, as given or as resolved: nothing outside it is even looked at. */
function within(root: SiteRoot, path: string): boolean {
  const normal = stripSlashes(nodePath().posix.normalize(path));
  return inside(normal, root.dir) || inside(normal, root.real);
}

/** A name as the -v line shows it: a client's bytes must not make lines of their own. */
function shown(path: string): string {
  const text = quoted(path);
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}

/**
 * Apache's SetHandler "proxy:fcgi://host:port/" sends SCRIPT_FILENAME as
 * "proxy:fcgi://host:port//srv/cgi-bin/app.cgi": the file is the part
 * after the authority (php-fpm strips it the same way).
 */
function withoutProxyPrefix(filename: string | undefined): string | undefined {
  const m = filename?.match(/^proxy:(?:fcgi|scgi):\/\/[^/]*(\/.*)$/);
  return m ? m[1].replace(/^\/+/, "/") : filename;
}

/** A failed call's errno name (ENOENT, EACCES...), or its message. */
function errorCode(e: unknown): string {
  if (e instanceof Error && "code" in e && typeof e.code === "string") return e.code;
  return e instanceof Error ? e.message : String(e);
}

/** stat(2) following symlinks; undefined when nothing is there (ENOENT, ENOTDIR: a file named as a directory). */
function look(path: string): Stats | undefined | { error: string } {
  try {
    return fs().statSync(path, { throwIfNoEntry: false }) ?? undefined;
  } catch (e) {
    const code = errorCode(e);
    return code === "ENOTDIR" ? undefined : { error: code };
  }
}

/**
 * The program for a request's variables (one value per name: cgi.ts
 * lastValueEach, or SCGI's refusal of a repeated name) under `root`, or why none runs.
 */
export function chooseSiteProgram(root: SiteRoot, variables: Variable[]): SiteProgram | SiteRefusal {
  const get = (name: string) => valueOf(variables, name);
  const filename = withoutProxyPrefix(get("SCRIPT_FILENAME"));
  const documentRoot = get("DOCUMENT_ROOT");
  const scriptName = get("SCRIPT_NAME");
  // SCRIPT_FILENAME names the program exactly; DOCUMENT_ROOT + SCRIPT_NAME may carry PATH_INFO after it.
  const trimming = !filename;
  const full = filename || (documentRoot !== undefined && scriptName ? documentRoot + scriptName : undefined);
  if (full === undefined) return { status: 403, why: "the request names no program (no SCRIPT_FILENAME, nor DOCUMENT_ROOT and SCRIPT_NAME)" };
  if (!full.startsWith("/")) return { status: 403, why: `${shown(full)} is not an absolute path` };
  // Lexically first: nothing outside the root is even looked at, so a 404 or 403 tells nothing about it.
  if (!within(root, full)) return { status: 403, why: `${shown(full)} is outside the --cgi-root ${root.dir}` };
  let candidate = stripSlashes(full);
  let stats = look(candidate);
  if (!stats && trimming) {
    // Web servers send a normalized path; with a "." or ".." in it a shorter part could leave the root lexically.
    if (/\/\.\.?(\/|$)/.test(candidate)) return { status: 403, why: `${shown(full)} has a "." or ".." segment` };
    [candidate, stats] = longestThere(root, candidate);
  }
  if (stats && "error" in stats) return { status: 403, why: `${shown(candidate)}: ${stats.error}` };
  if (!stats) return { status: 404, why: `no program ${shown(full)}` };
  if (stats.isDirectory()) {
    // The request's whole path a directory is a listing nobody serves; a directory reached by trimming has no such program.
    return candidate === stripSlashes(full) ? { status: 403, why: `${shown(candidate)} is a directory` } : { status: 404, why: `no program ${shown(full)}` };
  }
  if (!stats.isFile()) return { status: 403, why: `${shown(candidate)} is not a regular file` };
  try {
    fs().accessSync(candidate, fs().constants.X_OK);
  } catch {
    return { status: 403, why: `${shown(candidate)} is not executable` };
  }
  let real: string;
  try {
    real = fs().realpathSync.native(candidate); // the kernel's: the JavaScript one takes ".." lexically, another file than the one stat saw
  } catch (e) {
    return { status: 403, why: `${shown(candidate)}: ${errorCode(e)}` };
  }
  if (!inside(real, root.real)) return { status: 403, why: `${shown(candidate)} is ${shown(real)}, outside the --cgi-root ${root.dir}` };
  // As the request names it too: a symlink in a directory others can write could be pointed at another program.
  // Not normalized: past a symlink ".." is the parent of its target, so each prefix is where the kernel went.
  const named = stripSlashes(candidate.replace(/\/+/g, "/"));
  const unsafe = othersCouldWrite(root, real) ?? (named === real ? undefined : othersCouldWrite(root, named));
  if (unsafe) return { status: 403, why: unsafe, unsafe: true };
  return { path: real, variables: confined(root, trimming ? splitPathInfo(variables, full, candidate) : variables, real) };
}

/** Where the shorter parts of `path` end: its slashes after the first byte. */
function slashesOf(path: string): number[] {
  const cuts: number[] = [];
  for (let at = path.indexOf("/", 1); at > 0; at = path.indexOf("/", at + 1)) cuts.push(at);
  return cuts;
}

/** The last index in [lo, hi) for which `holds` is true, where it holds up to some index and not after; lo - 1 if none. */
function lastHolding(lo: number, hi: number, holds: (i: number) => boolean): number {
  let [yes, no] = [lo - 1, hi];
  while (no - yes > 1) {
    const mid = (yes + no) >>> 1;
    if (holds(mid)) yes = mid;
    else no = mid;
  }
  return yes;
}

/**
 * The longest part of `path` (missing: PATH_INFO may follow the program)
 * that is inside the root and there, and what is there (undefined: no
 * such part). A longer part resolves only through a shorter one, and
 * without "." or ".." a part inside the root has only longer ones inside
 * it, so both bounds are found by halving: a client's thousands of
 * segments cost a few dozen stats, not thousands.
 */
function longestThere(root: SiteRoot, path: string): [string, ReturnType<typeof look>] {
  const cuts = slashesOf(path);
  const part = (i: number) => path.slice(0, cuts[i]);
  const first = lastHolding(0, cuts.length, (i) => !within(root, part(i))) + 1;
  const there = lastHolding(first, cuts.length, (i) => look(part(i)) !== undefined);
  return there < first ? [path, undefined] : [part(there), look(part(there))];
}

/**
 * Why a program someone else could have written must not run, as Apache's
 * suexec and sshd's StrictModes refuse it (neither fcgiwrap nor php-fpm
 * does): the program, or a directory on its way from the root, writable by
 * its group or by others, or owned by someone but root and the user socket
 * runs as. Such a file is anyone's code running as socket's user. There is
 * no option to allow it: mend the modes or the owner. `path`: the
 * program's real path, or the path the request named (its "." and ".."
 * kept), whose every prefix stat follows as the kernel did.
 */
function othersCouldWrite(root: SiteRoot, path: string): string | undefined {
  const uid = process.geteuid?.() ?? 0;
  for (; ; path = nodePath().posix.dirname(path)) {
    const stats = fs().statSync(path, { throwIfNoEntry: false });
    if (!stats) return `${shown(path)} has gone`;
    if (stats.mode & 0o022) return `${shown(path)} is writable by ${stats.mode & 0o002 ? "others" : "its group"} (chmod go-w)`;
    if (stats.uid !== 0 && stats.uid !== uid) return `${shown(path)} is owned by uid ${stats.uid}, neither root nor socket's user`;
    if (path === root.real || path === root.dir || path === "/") return undefined;
  }
}

/**
 * As fcgiwrap does: the components trimmed off become PATH_INFO and
 * SCRIPT_NAME the program's own part; a path that named the program
 * exactly has no PATH_INFO. The request's bytes are split, not its decoded
 * text, so a PATH_INFO that is not UTF-8 reaches the CGI as it came: the
 * split is at a "/", which is the same byte in both and which a byte that
 * is not UTF-8 never hides, so the text's last n slashes are the bytes'.
 */
function splitPathInfo(variables: Variable[], full: string, program: string): Variable[] {
  const rest = full.slice(program.length);
  const kept = variables.filter(([n]) => n !== "PATH_INFO" && (rest === "" || n !== "SCRIPT_NAME"));
  if (rest === "") return kept;
  const named = (name: string) => bytesOf(variables.find(([n]) => n === name)!);
  const documentRoot = named("DOCUMENT_ROOT");
  const bytes = Buffer.concat([documentRoot, named("SCRIPT_NAME")]);
  let at = bytes.length;
  for (let slashes = rest.split("/").length - 1; slashes > 0; ) if (bytes[--at] === 0x2f) slashes--;
  return [...kept, variable("SCRIPT_NAME", bytes.subarray(documentRoot.length, Math.max(at, documentRoot.length))), variable("PATH_INFO", bytes.subarray(at))];
}

/**
 * What names the program to the CGI, from socket, never the request: a
 * request's own SCRIPT_FILENAME or PATH_TRANSLATED could name a file
 * outside the root, and php-cgi runs PATH_TRANSLATED when there is no
 * SCRIPT_FILENAME, or instead of it under cgi.fix_pathinfo=0. So
 * SCRIPT_FILENAME is the program's real path, and PATH_TRANSLATED
 * DOCUMENT_ROOT + PATH_INFO (RFC 3875 section 4.1.6) when there is a
 * PATH_INFO and that path lies inside the root (its real path too, when it
 * is there); else there is none.
 */
function confined(root: SiteRoot, variables: Variable[], program: string): Variable[] {
  const kept: Variable[] = variables.filter(([n]) => n !== "SCRIPT_FILENAME" && n !== "PATH_TRANSLATED");
  kept.push(["SCRIPT_FILENAME", program]);
  const documentRoot = variables.find(([n]) => n === "DOCUMENT_ROOT");
  const pathInfo = variables.find(([n]) => n === "PATH_INFO");
  if (!documentRoot || !pathInfo || pathInfo[1] === "") return kept;
  const bytes = Buffer.concat([bytesOf(documentRoot), bytesOf(pathInfo)]);
  const translated = variable("PATH_TRANSLATED", bytes);
  if (insideByRealPath(root, translated[1], bytes)) kept.push(translated);
  return kept;
}

/** An absolute path (`bytes`, decoded as `path`) inside the root, and when it is there, its real path too. */
function insideByRealPath(root: SiteRoot, path: string, bytes: Buffer): boolean {
  if (!path.startsWith("/") || !within(root, path)) return false;
  // A file not there yet (a PUT's) is judged by the longest part of its path that is: a symlinked
  // directory on the way must not lead out of the root for a CGI that writes where it points.
  const real = (end: number): string | undefined | false => {
    try {
      return fs().realpathSync.native(bytes.subarray(0, end), { encoding: "buffer" }).toString(); // the kernel's "..", as the CGI's open(2)
    } catch (e) {
      const code = e instanceof Error && "code" in e ? e.code : undefined;
      return code === "ENOENT" || code === "ENOTDIR" ? undefined : false;
    }
  };
  const whole = real(bytes.length);
  if (whole !== undefined) return whole !== false && inside(whole, root.real);
  // Missing: no part of it fails otherwise (resolving stops at the first missing segment), so, as in longestThere, halving.
  const cuts: number[] = [];
  for (let at = bytes.indexOf(0x2f, 1); at > 0; at = bytes.indexOf(0x2f, at + 1)) cuts.push(at);
  const found = cuts[lastHolding(0, cuts.length, (i) => real(cuts[i]) !== undefined)];
  const part = found === undefined ? undefined : real(found);
  return typeof part === "string" && inside(part, root.real);
}
