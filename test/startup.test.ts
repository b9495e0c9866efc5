// What a start reads and evaluates. src/entry.ts reads which program this
// start is (-version, a pool worker, the command line) before it loads
// any: each program is a bundle of its own in the executable, and inside a
// program the parser, the master, a worker's gateways... are dynamic
// imports, evaluated only on the path that asks for them. How fast that makes a start is the bench's to
// say (`npm run bench`, startup); these tests hold the shape, from the
// bundler's own account (its metafile) of each bundle and module.
// A node built-in (node:fs...) that any module imports statically is
// loaded at every start of the one bundle, so none is: they are loaded at
// their first use (src/system/builtins.ts).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { compile, ENTRY, PROGRAMS } from "../scripts/build.ts";
import { tempDir } from "./harness.ts";

interface Metafile {
  inputs: Record<string, { imports: { path: string; kind: string; external?: boolean }[] }>;
  outputs: Record<string, { entryPoint?: string; inputs: Record<string, unknown> }>;
}

/** The modules the bundle built from `entryPoint` holds: what a start that loads it reads. */
function bundled(meta: Metafile, entryPoint: string): string[] {
  const output = Object.values(meta.outputs).find((o) => o.entryPoint === entryPoint);
  if (output === undefined) throw new Error(`the build has no bundle for ${entryPoint}`);
  return Object.keys(output.inputs).sort();
}

/** The modules evaluated once `module` is: it and everything it imports statically, not what it imports dynamically. */
function evaluatedWith(meta: Metafile, module: string): string[] {
  const seen = new Set<string>();
  const walk = (path: string) => {
    if (seen.has(path) || !(path in meta.inputs)) return;
    seen.add(path);
    for (const i of meta.inputs[path].imports) if (i.kind === "import-statement" && !i.external) walk(i.path);
  };
  walk(module);
  if (seen.size === 0) throw new Error(`the build has no module ${module}`);
  return [...seen].sort();
}

/** The runtime's modules (node:fs, bun:ffi...) that evaluating `modules` loads: their import statements' (a require() waits for its call). */
const builtins = (meta: Metafile, modules: string[]) =>
  modules.flatMap((m) => (meta.inputs[m]?.imports ?? []).filter((i) => i.external && i.kind === "import-statement").map((i) => i.path));

/** Whether `from` imports `to` dynamically. */
const importsLater = (meta: Metafile, from: string, to: string) => meta.inputs[from].imports.some((i) => i.path === to && i.kind === "dynamic-import");

describe("what each start evaluates (the build's metafile)", () => {
  let dir: ReturnType<typeof tempDir>;
  let meta: Metafile;
  beforeAll(() => void (dir = tempDir()));
  afterAll(() => dir[Symbol.dispose]());

  test("the build compiles and accounts for its modules", async () => {
    const metafile = join(dir.path, "meta.json");
    await compile(join(dir.path, "socket"), undefined, "test", metafile);
    meta = await Bun.file(metafile).json();
    expect(Object.keys(meta.inputs).length).toBeGreaterThan(50);
  }, 120_000);

  test("-version: the entry's bundle, the base modules it answers from and no built-in module; each program a bundle of its own", () => {
    const base = ["package.json", "src/entry.ts", "src/fatal.ts", "src/pool/protocol.ts", "src/system/output.ts", "src/version.ts"];
    expect(evaluatedWith(meta, "src/entry.ts")).toEqual(base);
    expect(bundled(meta, "src/entry.ts")).toEqual(base);
    expect(builtins(meta, base)).toEqual([]);
    expect(bundled(meta, "src/main.ts")).toContain("src/cli/parse.ts");
    expect(bundled(meta, "src/worker-main.ts")).toContain("src/pool/worker.ts");
  });

  test("a worker's bundle holds none of the command line's, the master's, the client's or the classic server's code", () => {
    const foreign = /^src\/(cli|client|server)\/|^src\/main\.ts$|^src\/pool\/(master|run-pool|status|status-http|succession|worker-process)\.ts$|citty/;
    expect(bundled(meta, "src/worker-main.ts").filter((m) => foreign.test(m))).toEqual([]);
  });

  test("a worker: the worker's code, not the parser, the master, the client, the classic server, --help or a gateway", () => {
    const evaluated = evaluatedWith(meta, "src/worker-main.ts");
    expect(evaluated).toContain("src/pool/worker.ts");
    // request-deadline.ts: --request-timeout's line for a -p program, with nothing of a gateway.
    const foreign = /^src\/(cli|client|server|gateway)\/|^src\/request\/(?!request-deadline\.ts$)|^src\/main\.ts$|^src\/pool\/(master|run-pool|status|status-http)\.ts$|citty/;
    expect(evaluated.filter((m) => foreign.test(m))).toEqual([]);
  });

  test("no module of socket's imports a node built-in statically: the bundle would load it at every start", () => {
    const ours = Object.keys(meta.inputs).filter((m) => m.startsWith("src/"));
    expect(builtins(meta, ours).filter((b) => b !== "bun:ffi")).toEqual([]);
  });

  test("no bundle's top imports anything but bun:ffi (a package's unused imports are shaken out)", async () => {
    const built = await Bun.build({ entrypoints: [ENTRY, ...PROGRAMS], target: "bun", format: "esm", minify: true });
    expect(built.success).toBe(true);
    expect(built.outputs.length).toBe(3);
    for (const output of built.outputs) {
      const text = await output.text();
      const imported = [...text.matchAll(/import\s*\{[^}]*\}\s*from\s*"([^"]+)"|import\s*"([^"]+)"/g)].map((m) => m[1] ?? m[2]);
      expect(imported.filter((i) => i !== "bun:ffi")).toEqual([]);
      expect(text).not.toContain("import.meta.require");
    }
  });

  test("a gateway's worker evaluates the engines when it serves one: dynamic imports of the worker", () => {
    for (const engine of ["src/gateway/fastcgi-blocking.ts", "src/gateway/scgi.ts", "src/request/site.ts"]) {
      expect(importsLater(meta, "src/pool/worker.ts", engine)).toBe(true);
    }
    expect(evaluatedWith(meta, "src/gateway/fastcgi-blocking.ts")).toContain("src/request/fastcgi-responder.ts");
  });

  test("the command line: not the worker, the master or --help's citty until their paths run", () => {
    const evaluated = evaluatedWith(meta, "src/main.ts");
    expect(evaluated).toContain("src/main.ts");
    const later = /^src\/pool\/(worker|master|run-pool)\.ts$|^src\/(cli\/help|client\/client|server\/classic)\.ts$|^src\/gateway\/|citty/;
    expect(evaluated.filter((m) => later.test(m))).toEqual([]);
  });
});
