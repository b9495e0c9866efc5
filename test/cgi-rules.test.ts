// The rules on a request's variables, as pure functions: one value per name
// (FastCGI keeps the last, SCGI refuses a repeat), which header names reach
// a program, and what --cgi-root tells the program about itself
// (SCRIPT_FILENAME, PATH_TRANSLATED, PATH_INFO's bytes).
import { describe, expect, test } from "bun:test";
import { chmodSync, chownSync, mkdirSync, realpathSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { lastValueEach, LIMITS, printable, quoted, requestMaySet, variable, type Variable } from "../src/request/cgi.ts";
import { encodePairs, gatherParams, heldParams } from "../src/request/fastcgi-records.ts";
import { parseScgiHeader } from "../src/request/scgi-header.ts";
import { chooseSiteProgram, siteRoot, type SiteProgram, type SiteRefusal } from "../src/request/site.ts";
import { random, tempDir, writeExecutable } from "./harness.ts";

const hex = (bytes: Uint8Array | undefined) => Buffer.from(bytes ?? []).toString("hex");
/** A variable's bytes, whether or not they were UTF-8. */
const bytesNamed = (vars: Variable[], name: string) => {
  const found = vars.find(([n]) => n === name);
  return found && (found[2] ?? Buffer.from(found[1]));
};
const names = (vars: Variable[], name: string) => vars.filter(([n]) => n === name).map(([, v]) => v);

describe("one value per name", () => {
  test("lastValueEach keeps the last value of a repeated name, where its first stood", () => {
    const vars: Variable[] = [["A", "1"], ["B", "2"], ["A", "3"], ["C", "4"], ["A", "5"]];
    expect(lastValueEach(vars)).toEqual([["A", "5"], ["B", "2"], ["C", "4"]]);
    expect(lastValueEach([["A", "1"], ["B", "2"]])).toEqual([["A", "1"], ["B", "2"]]);
  });

  test("FastCGI's PARAMS: the variables gathered have one value per name, the last, CONTENT_LENGTH too", () => {
    const content = encodePairs([["CONTENT_LENGTH", "5"], ["SCRIPT_FILENAME", "/srv/cgi/app.php"], ["SCRIPT_FILENAME", "/etc/shadow"], ["CONTENT_LENGTH", ""]]);
    const held = heldParams();
    expect(gatherParams(held, content)).toBeUndefined();
    const done = gatherParams(held, new Uint8Array(0));
    if (typeof done !== "object") throw new Error(`gatherParams: ${done}`);
    expect(done.variables).toEqual([["CONTENT_LENGTH", ""], ["SCRIPT_FILENAME", "/etc/shadow"]]);
    // The CONTENT_LENGTH that counts is the one the CGI gets: none, so the body is spooled first.
    expect(done.streams).toBe(false);
  });

  test("FastCGI's PARAMS in one-byte records: the same variables, held in one buffer no larger than the limit, gone at the end", () => {
    const content = encodePairs([["CONTENT_LENGTH", "5"], ["SCRIPT_NAME", "/x".repeat(1000)]]);
    const held = heldParams();
    for (const byte of content) expect(gatherParams(held, new Uint8Array([byte]))).toBeUndefined();
    expect(held.params.length).toBeLessThanOrEqual(LIMITS.headerBytes);
    const done = gatherParams(held, new Uint8Array(0));
    if (typeof done !== "object") throw new Error(`gatherParams: ${done}`);
    expect(done.variables).toEqual([["CONTENT_LENGTH", "5"], ["SCRIPT_NAME", "/x".repeat(1000)]]);
    expect(held.params.length).toBe(0);
    // One byte past the limit, however it comes, is the error.
    const full = heldParams();
    expect(gatherParams(full, new Uint8Array(LIMITS.headerBytes))).toBeUndefined();
    expect(gatherParams(full, new Uint8Array(1))).toBe(`PARAMS over the ${LIMITS.headerBytes}-byte limit`);
  });

  test("SCGI refuses a name sent twice", () => {
    const header = Buffer.from("CONTENT_LENGTH\x000\x00SCGI\x001\x00SCRIPT_FILENAME\x00/srv/a\x00SCRIPT_FILENAME\x00/etc/shadow\x00");
    expect(parseScgiHeader(header)).toEqual({ error: "variable SCRIPT_FILENAME sent twice" });
  });
});

describe("header names", () => {
  const none = new Set<string>();
  test("HTTP_PROXY is refused in any case, also when --pass-env names it", () => {
    for (const name of ["HTTP_PROXY", "HTTP_proxy", "HTTP_Proxy", "HTTP_pROXY"]) {
      expect({ name, allowed: requestMaySet(name, none) }).toEqual({ name, allowed: false });
      expect({ name, allowed: requestMaySet(name, new Set([name])) }).toEqual({ name, allowed: false });
    }
  });

  test("a header line only as web servers name it: upper case, digits and _", () => {
    for (const name of ["HTTP_ACCEPT", "HTTP_X_FORWARDED_FOR", "HTTP_X_API_V2", "HTTP_HOST"]) expect({ name, allowed: requestMaySet(name, none) }).toEqual({ name, allowed: true });
    for (const name of ["HTTP_accept", "HTTP_Accept", "HTTP_X-Forwarded-For", "HTTP_"]) expect({ name, allowed: requestMaySet(name, none) }).toEqual({ name, allowed: false });
  });

  test("the rest of the table and --pass-env as before", () => {
    expect(requestMaySet("SCRIPT_NAME", none)).toBe(true);
    expect(requestMaySet("SSL_CLIENT_S_DN_Email", none)).toBe(true);
    expect(requestMaySet("PERL5OPT", none)).toBe(false);
    expect(requestMaySet("FOO", new Set(["FOO"]))).toBe(true);
  });
});

interface Tree {
  root: string;
  app: string;
  outside: string;
}

/** root/app.cgi, root/cgi-bin/, root/out -> outside/, outside/secret. */
function tree(dir: string): Tree {
  const base = realpathSync(dir);
  const root = join(base, "root");
  const outside = join(base, "outside");
  mkdirSync(join(root, "cgi-bin"), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(outside, "secret"), "secret\n");
  symlinkSync(outside, join(root, "out"));
  return { root, outside, app: writeExecutable(join(root, "app.cgi"), "#!/bin/sh\n") };
}

function chosen(result: SiteProgram | SiteRefusal): SiteProgram {
  if ("status" in result) throw new Error(`refused: ${result.status} ${result.why}`);
  return result;
}

describe("--cgi-root: what names the program is socket's", () => {
  test("a repeated SCRIPT_FILENAME: the value that chooses the program is the one the CGI gets", () => {
    using dir = tempDir();
    const t = tree(dir.path);
    const root = siteRoot(t.root);
    const out = chooseSiteProgram(root, lastValueEach([["SCRIPT_FILENAME", t.app], ["SCRIPT_FILENAME", join(t.outside, "secret")]]));
    expect(out).toMatchObject({ status: 403 });
    const program = chosen(chooseSiteProgram(root, lastValueEach([["SCRIPT_FILENAME", join(t.outside, "secret")], ["SCRIPT_FILENAME", t.app]])));
    expect(program.path).toBe(t.app);
    expect(names(program.variables, "SCRIPT_FILENAME")).toEqual([t.app]);
  });

  test("SCRIPT_FILENAME is the program's real path in both modes; the request's PATH_TRANSLATED never passes", () => {
    using dir = tempDir();
    const t = tree(dir.path);
    const root = siteRoot(t.root);
    const byName = chosen(chooseSiteProgram(root, [["DOCUMENT_ROOT", t.root], ["SCRIPT_NAME", "/app.cgi"], ["PATH_TRANSLATED", "/etc/passwd"]]));
    expect(names(byName.variables, "SCRIPT_FILENAME")).toEqual([t.app]);
    expect(names(byName.variables, "PATH_TRANSLATED")).toEqual([]);
    const byFile = chosen(chooseSiteProgram(root, [["SCRIPT_FILENAME", `proxy:fcgi://127.0.0.1:9000/${t.root}//app.cgi`], ["PATH_TRANSLATED", "/etc/passwd"]]));
    expect(names(byFile.variables, "SCRIPT_FILENAME")).toEqual([t.app]);
    expect(names(byFile.variables, "PATH_TRANSLATED")).toEqual([]);
  });

  test("PATH_TRANSLATED is DOCUMENT_ROOT + PATH_INFO inside the root, else not set", () => {
    using dir = tempDir();
    const t = tree(dir.path);
    const root = siteRoot(t.root);
    const translated = (vars: Variable[]) => names(chosen(chooseSiteProgram(root, vars)).variables, "PATH_TRANSLATED");
    expect(translated([["DOCUMENT_ROOT", t.root], ["SCRIPT_NAME", "/app.cgi/doc/x.md"], ["PATH_TRANSLATED", "/etc/passwd"]])).toEqual([`${t.root}/doc/x.md`]);
    expect(translated([["SCRIPT_FILENAME", t.app], ["DOCUMENT_ROOT", t.root], ["PATH_INFO", "/cgi-bin"]])).toEqual([`${t.root}/cgi-bin`]);
    // Outside: another document root, "..", a symlink out of the root.
    expect(translated([["SCRIPT_FILENAME", t.app], ["DOCUMENT_ROOT", t.outside], ["PATH_INFO", "/secret"]])).toEqual([]);
    expect(translated([["SCRIPT_FILENAME", t.app], ["DOCUMENT_ROOT", t.root], ["PATH_INFO", "/../outside/secret"]])).toEqual([]);
    expect(translated([["SCRIPT_FILENAME", t.app], ["DOCUMENT_ROOT", t.root], ["PATH_INFO", "/out/secret"]])).toEqual([]);
    // ".." after a symlink is its target's parent, as the CGI's open(2) takes it: root/out/../outside is outside/, not root/outside.
    expect(translated([["SCRIPT_FILENAME", t.app], ["DOCUMENT_ROOT", t.root], ["PATH_INFO", "/out/../outside/secret"]])).toEqual([]);
    expect(translated([["SCRIPT_FILENAME", t.app], ["DOCUMENT_ROOT", t.root], ["PATH_INFO", "/out/../outside/new"]])).toEqual([]);
    // A file not there yet is judged by the part of its path that is: through the symlink, outside.
    expect(translated([["SCRIPT_FILENAME", t.app], ["DOCUMENT_ROOT", t.root], ["PATH_INFO", "/out/new/file"]])).toEqual([]);
    expect(translated([["SCRIPT_FILENAME", t.app], ["DOCUMENT_ROOT", t.root], ["PATH_INFO", "/cgi-bin/new/file"]])).toEqual([`${t.root}/cgi-bin/new/file`]);
    expect(translated([["SCRIPT_FILENAME", t.app], ["DOCUMENT_ROOT", "relative"], ["PATH_INFO", "/x"]])).toEqual([]);
    expect(translated([["SCRIPT_FILENAME", t.app], ["DOCUMENT_ROOT", t.root]])).toEqual([]);
  });

  test("a program someone else could have written is refused: writable by its group or others on the way from the root, or another owner", () => {
    using dir = tempDir();
    const t = tree(dir.path);
    const root = siteRoot(t.root);
    expect(chosen(chooseSiteProgram(root, [["SCRIPT_FILENAME", t.app]])).path).toBe(t.app);
    chmodSync(t.app, 0o775);
    expect(chooseSiteProgram(root, [["SCRIPT_FILENAME", t.app]])).toEqual({ status: 403, why: `"${t.app}" is writable by its group (chmod go-w)`, unsafe: true });
    chmodSync(t.app, 0o755);
    const nested = writeExecutable(join(t.root, "cgi-bin", "x.cgi"), "#!/bin/sh\n");
    chmodSync(join(t.root, "cgi-bin"), 0o777);
    expect(chooseSiteProgram(root, [["SCRIPT_FILENAME", nested]])).toMatchObject({ status: 403, why: `"${join(t.root, "cgi-bin")}" is writable by others (chmod go-w)` });
    chmodSync(join(t.root, "cgi-bin"), 0o755);
    chownSync(nested, 4242, 4242);
    expect(chooseSiteProgram(root, [["SCRIPT_FILENAME", nested]])).toMatchObject({ status: 403, why: `"${nested}" is owned by uid 4242, neither root nor socket's user` });
  });

  test("a program named through a symlink: the directories on the request's path are checked too, not only the real path's", () => {
    using dir = tempDir();
    const t = tree(dir.path);
    const root = siteRoot(t.root);
    mkdirSync(join(t.root, "pub"));
    chmodSync(join(t.root, "pub"), 0o777);
    symlinkSync(t.app, join(t.root, "pub", "x.cgi"));
    expect(chooseSiteProgram(root, [["SCRIPT_FILENAME", join(t.root, "pub", "x.cgi")]])).toEqual({ status: 403, why: `"${join(t.root, "pub")}" is writable by others (chmod go-w)`, unsafe: true });
    // Trimmed from DOCUMENT_ROOT + SCRIPT_NAME, and through a symlinked directory that leads into the writable one.
    symlinkSync(join(t.root, "pub"), join(t.root, "pubs"));
    expect(chooseSiteProgram(root, [["DOCUMENT_ROOT", t.root], ["SCRIPT_NAME", "/pubs/x.cgi/more"]])).toMatchObject({ status: 403, unsafe: true });
    chmodSync(join(t.root, "pub"), 0o755);
    expect(chosen(chooseSiteProgram(root, [["DOCUMENT_ROOT", t.root], ["SCRIPT_NAME", "/pubs/x.cgi/more"]])).path).toBe(t.app);
    // The root named through a symlink of its own: the walk stops there.
    symlinkSync(t.root, join(dir.path, "alias"));
    const alias = siteRoot(join(dir.path, "alias"));
    expect(chosen(chooseSiteProgram(alias, [["SCRIPT_FILENAME", join(dir.path, "alias", "pub", "x.cgi")]])).path).toBe(t.app);
  });

  test("a program named through a symlink and '..' past it: the directories the kernel went through are checked, not the name's lexical rest", () => {
    using dir = tempDir();
    const t = tree(dir.path);
    const root = siteRoot(t.root);
    // pub (others may write) holds a link into a deep safe directory; "pub/l/../../x.cgi" is lexically the root's x.cgi, a safe one.
    mkdirSync(join(t.root, "guarded", "a", "b"), { recursive: true });
    const guarded = writeExecutable(join(t.root, "guarded", "x.cgi"), "#!/bin/sh\n");
    writeExecutable(join(t.root, "x.cgi"), "#!/bin/sh\n");
    mkdirSync(join(t.root, "pub"));
    chmodSync(join(t.root, "pub"), 0o777);
    symlinkSync(join(t.root, "guarded", "a", "b"), join(t.root, "pub", "l"));
    const named = `${t.root}/pub/l/../../x.cgi`;
    expect(chooseSiteProgram(root, [["SCRIPT_FILENAME", named]])).toEqual({ status: 403, why: `"${join(t.root, "pub")}" is writable by others (chmod go-w)`, unsafe: true });
    chmodSync(join(t.root, "pub"), 0o755);
    expect(chosen(chooseSiteProgram(root, [["SCRIPT_FILENAME", named]])).path).toBe(guarded);
    // Doubled slashes and a ".." that comes back into the root still run what they name.
    expect(chosen(chooseSiteProgram(root, [["SCRIPT_FILENAME", `${t.root}//pub/..//app.cgi`]])).path).toBe(t.app);
  });

  test("a client's path or name on a line: no control character raw, C1's CSI (U+009B, which JSON leaves) and DEL included", () => {
    using dir = tempDir();
    const t = tree(dir.path);
    const missing = `${t.root}/\u009b2J\x7f\x1b[0m\n.cgi`;
    const refused = chooseSiteProgram(siteRoot(t.root), [["SCRIPT_FILENAME", missing]]);
    expect(refused).toEqual({ status: 404, why: `no program "${t.root}/\\u009b2J\\u007f\\u001b[0m\\n.cgi"` });
    expect(printable("X\u0085\u009bY")).toBe('"X\\u0085\\u009bY"');
    expect(quoted("é\u00a0ok")).toBe('"é\u00a0ok"'); // printable beyond C1 is left as it is
  });

  test("a PATH_INFO split off SCRIPT_NAME keeps the request's bytes", () => {
    using dir = tempDir();
    const t = tree(dir.path);
    const root = siteRoot(t.root);
    const split = (tail: number[]) => {
      const scriptName = variable("SCRIPT_NAME", Buffer.concat([Buffer.from("/app.cgi"), Buffer.from(tail)]));
      return chosen(chooseSiteProgram(root, [["DOCUMENT_ROOT", t.root], scriptName])).variables;
    };
    const cafe = [0x2f, 0x63, 0x61, 0x66, 0xe9]; // "/caf\xe9"
    const vars = split(cafe);
    expect(hex(bytesNamed(vars, "PATH_INFO"))).toBe(hex(Buffer.from(cafe)));
    expect(names(vars, "SCRIPT_NAME")).toEqual(["/app.cgi"]);
    expect(hex(bytesNamed(vars, "PATH_TRANSLATED"))).toBe(hex(Buffer.concat([Buffer.from(t.root), Buffer.from(cafe)])));
    // A byte that is not UTF-8 before a "/", a truncated sequence at the end, and trailing slashes.
    for (const tail of [[0x2f, 0xc3, 0x2f, 0x78, 0xe2, 0x82], [0x2f, 0xff, 0xfe, 0x2f, 0x2f], [0x2f]]) {
      expect(hex(bytesNamed(split(tail), "PATH_INFO"))).toBe(hex(Buffer.from(tail)));
    }
    // Named exactly: no PATH_INFO.
    expect(names(split([]), "PATH_INFO")).toEqual([]);
  });
});

describe("--cgi-root: finding the program in DOCUMENT_ROOT + SCRIPT_NAME", () => {
  /**
   * The rule as first written, one segment at a time from the right: the
   * longest part of the path that is there, inside the root. Generated
   * paths have no "." or "..", so inside the root is as long as the root.
   */
  const there = (path: string) => {
    try {
      return statSync(path, { throwIfNoEntry: false }) !== undefined;
    } catch {
      return false; // ENOTDIR: a file on the way
    }
  };
  function oneAtATime(rootDir: string, full: string): string | undefined {
    for (let candidate = full; candidate.length >= rootDir.length; candidate = candidate.slice(0, candidate.lastIndexOf("/"))) {
      if (there(candidate)) return candidate;
    }
    return undefined;
  }

  test("generated trees and paths: the program and PATH_INFO found by halving are the ones trimming one segment at a time finds", () => {
    using dir = tempDir();
    const base = realpathSync(dir.path);
    const rootDir = join(base, "root");
    const next = random(20261206);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)];
    const dirs: string[] = [rootDir];
    const made = new Set<string>();
    mkdirSync(rootDir);
    for (let i = 0; i < 60; i++) {
      const at = join(pick(dirs), pick(["a", "b", "c.cgi", "d"]) + (i % 3));
      if (made.has(at)) continue;
      made.add(at);
      if (next() < 0.5) {
        mkdirSync(at);
        dirs.push(at);
      } else writeExecutable(at, "#!/bin/sh\n");
    }
    const root = siteRoot(rootDir);
    for (let i = 0; i < 500; i++) {
      const segments = Array.from({ length: 1 + Math.floor(next() * 12) }, () => pick(["a0", "a1", "b2", "c.cgi0", "c.cgi1", "d2", "x", "y.cgi", ""]));
      const scriptName = `/${segments.join("/")}`;
      const full = rootDir + scriptName;
      const result = chooseSiteProgram(root, [["DOCUMENT_ROOT", rootDir], ["SCRIPT_NAME", scriptName]]);
      const found = oneAtATime(rootDir, full.replace(/\/+$/, ""));
      if (found === undefined || !statSync(found).isFile()) {
        expect({ scriptName, status: "status" in result ? result.status : 200 }).toMatchObject({ scriptName, status: found === full.replace(/\/+$/, "") ? 403 : 404 });
        continue;
      }
      const program = chosen(result);
      expect({ scriptName, path: program.path, pathInfo: names(program.variables, "PATH_INFO") }).toEqual({
        scriptName,
        path: realpathSync(found),
        pathInfo: found === full ? [] : [full.slice(found.length)],
      });
    }
  });

  test("thousands of segments after the program: found, with the PATH_INFO as sent", () => {
    using dir = tempDir();
    const t = tree(dir.path);
    const deep = "/x".repeat(2000);
    const program = chosen(chooseSiteProgram(siteRoot(t.root), [["DOCUMENT_ROOT", t.root], ["SCRIPT_NAME", `/app.cgi${deep}`]]));
    expect(program.path).toBe(t.app);
    expect(names(program.variables, "PATH_INFO")).toEqual([deep]);
    expect(chooseSiteProgram(siteRoot(t.root), [["DOCUMENT_ROOT", t.root], ["SCRIPT_NAME", `/nothing${deep}`]])).toMatchObject({ status: 404 });
  });

  test("a path with a \".\" or \"..\" segment that names nothing there is refused, before any shorter part is looked at", () => {
    using dir = tempDir();
    const t = tree(dir.path);
    for (const scriptName of ["/cgi-bin/../app.cgi/x", "/./app.cgi/x", "/cgi-bin/.."]) {
      expect(chooseSiteProgram(siteRoot(t.root), [["DOCUMENT_ROOT", t.root], ["SCRIPT_NAME", scriptName]])).toMatchObject({ status: 403 });
    }
    // Named exactly, as a web server might still send it: served.
    expect(chosen(chooseSiteProgram(siteRoot(t.root), [["DOCUMENT_ROOT", t.root], ["SCRIPT_NAME", "/cgi-bin/../app.cgi"]])).path).toBe(t.app);
  });
});
