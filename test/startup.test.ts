// What a start loads. src/entry.ts reads which program this start is
// (-version, a pool worker, the command line) before loading any, and
// scripts/build.ts compiles with code splitting, so each program is a chunk
// of its own in the executable, loaded by its dynamic import. How fast that
// makes a start is the bench's to say (`npm run bench`, startup); these
// tests hold the shape: the executable's own layout, and the bundler's
// account (its metafile) of what each start's chunks hold.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { compile } from "../scripts/build.ts";
import { SOCKET, tempDir } from "./harness.ts";

/** The names of the chunks the executable holds (its embedded files are /$bunfs/root/NAME-HASH.js), hashes left out. */
async function chunksOf(executable: string): Promise<Set<string>> {
  const bytes = Buffer.from(await Bun.file(executable).arrayBuffer());
  const names = new Set<string>();
  for (let at = bytes.indexOf("/$bunfs/root/"); at >= 0; at = bytes.indexOf("/$bunfs/root/", at + 1)) {
    const name = /^([a-z-]+)-[0-9a-z]{8}\.js/.exec(bytes.toString("latin1", at + 13, at + 80));
    if (name) names.add(name[1]);
  }
  return names;
}

test("the executable holds each program as a chunk of its own", async () => {
  const chunks = await chunksOf(SOCKET);
  for (const program of ["main", "worker-main", "fastcgi-blocking", "scgi", "site", "run-pool", "parse", "help", "client", "classic"]) {
    expect(chunks).toContain(program);
  }
});

interface Output {
  entryPoint?: string;
  imports: { path: string; kind: string }[];
  inputs: Record<string, unknown>;
}
interface Metafile {
  inputs: Record<string, { imports: { path: string; kind: string; external?: boolean }[] }>;
  outputs: Record<string, Output>;
}

/** The modules a start has loaded once `entryPoint`'s chunk is: its own, and those of every chunk it imports statically. */
function loadedWith(meta: Metafile, entryPoint: string): string[] {
  const start = Object.keys(meta.outputs).find((name) => meta.outputs[name].entryPoint === entryPoint);
  if (start === undefined) throw new Error(`no chunk has the entry point ${entryPoint}`);
  const seen = new Set<string>();
  const walk = (name: string) => {
    const key = name.startsWith("./") ? name : `./${name}`;
    if (seen.has(key)) return;
    seen.add(key);
    for (const i of meta.outputs[key].imports) if (i.kind === "import-statement") walk(i.path);
  };
  walk(start);
  return [...seen].flatMap((name) => Object.keys(meta.outputs[name].inputs)).sort();
}

/** The runtime's modules (node:fs, bun:ffi...) that loading `modules` loads: their import statements' (a require() waits for its call); chunks are named "./...". */
const builtins = (meta: Metafile, modules: string[]) =>
  modules.flatMap((m) =>
    (meta.inputs[m]?.imports ?? []).filter((i) => i.external && i.kind === "import-statement" && !i.path.startsWith("./")).map((i) => i.path),
  );

describe("the chunks each start loads (the build's metafile)", () => {
  let dir: ReturnType<typeof tempDir>;
  let meta: Metafile;
  beforeAll(() => void (dir = tempDir()));
  afterAll(() => dir[Symbol.dispose]());

  test("the build compiles and accounts for its chunks", async () => {
    const metafile = join(dir.path, "meta.json");
    compile(join(dir.path, "socket"), undefined, "test", metafile);
    meta = await Bun.file(metafile).json();
    expect(Object.keys(meta.outputs).length).toBeGreaterThan(3);
  }, 120_000);

  test("-version: the entry and the base modules it answers from, no built-in module", () => {
    const loaded = loadedWith(meta, "src/entry.ts");
    expect(loaded).toEqual(["package.json", "src/entry.ts", "src/fatal.ts", "src/pool/protocol.ts", "src/system/output.ts", "src/version.ts"]);
    expect(builtins(meta, loaded)).toEqual([]);
  });

  test("a worker: the worker's code, not the parser, the master, the client, the classic server, --help or a gateway", () => {
    const loaded = loadedWith(meta, "src/worker-main.ts");
    expect(loaded).toContain("src/pool/worker.ts");
    // request-deadline.ts: --request-timeout's line for a -p program, with nothing of a gateway.
    const foreign = /^src\/(cli|client|server|gateway)\/|^src\/request\/(?!request-deadline\.ts$)|^src\/main\.ts$|^src\/pool\/(master|run-pool|status|status-http)\.ts$|citty/;
    expect(loaded.filter((m) => foreign.test(m))).toEqual([]);
    // node:fs (about 1.2 ms of a start) is required where it is first used (system/lazy-fs.ts).
    expect(builtins(meta, loaded)).not.toContain("fs");
  });

  test("a gateway's worker loads the engines when it serves one: chunks the worker imports on demand", () => {
    const worker = Object.entries(meta.outputs).find(([, o]) => "src/pool/worker.ts" in o.inputs);
    expect(worker).toBeDefined();
    for (const engine of ["src/gateway/fastcgi-blocking.ts", "src/gateway/scgi.ts", "src/request/site.ts"]) {
      const chunk = Object.entries(meta.outputs).find(([, o]) => o.entryPoint === engine);
      expect(chunk).toBeDefined();
      expect(worker![1].imports).toContainEqual({ path: chunk![0], kind: "dynamic-import" });
    }
    expect(loadedWith(meta, "src/gateway/fastcgi-blocking.ts")).toContain("src/request/fastcgi-responder.ts");
  });

  test("the command line: not the worker, the master or --help's citty until their paths run", () => {
    const loaded = loadedWith(meta, "src/main.ts");
    expect(loaded).toContain("src/main.ts");
    const later = /^src\/pool\/(worker|master|run-pool)\.ts$|^src\/(cli\/help|client\/client|server\/classic)\.ts$|^src\/gateway\/|citty/;
    expect(loaded.filter((m) => later.test(m))).toEqual([]);
  });
});
