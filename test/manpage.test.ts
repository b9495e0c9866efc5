// The man page (docs/socket.1): renders without a warning, and names every
// option the parser knows, as `socket --help` lists them.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { run } from "./harness.ts";

const PAGE = join(import.meta.dir, "..", "docs", "socket.1");
const hasGroff = Bun.which("groff") !== null;
if (!hasGroff) console.warn("manpage.test: groff missing (Debian package groff-base): rendering check skipped");

test.skipIf(!hasGroff)("docs/socket.1 renders with no warning (groff -man -ww -z)", () => {
  const result = Bun.spawnSync(["groff", "-man", "-ww", "-z", PAGE], { stderr: "pipe" });
  expect(result.stderr.toString()).toBe("");
  expect(result.exitCode).toBe(0);
});

test("docs/socket.1 names every option `socket --help` lists, short and long", async () => {
  const help = await run(["--help"]);
  expect(help.status).toBe(0);
  const optionsPart = help.stdout.slice(help.stdout.indexOf("OPTIONS"));
  const names = new Set(optionsPart.match(/(?<=^|[\s,])--?[A-Za-z][A-Za-z-]*/gm) ?? []);
  expect(names.size).toBeGreaterThan(20); // the parse found the table
  // In roff a dash is written \-; an option is named when it stands as a word.
  const page = readFileSync(PAGE, "utf8");
  const missing = [...names].filter((name) => {
    const roff = name.replaceAll("-", "\\\\-");
    return !new RegExp(`(^|[^\\\\\\w-])${roff}(?![\\w-]|\\\\-)`, "m").test(page);
  });
  expect(missing).toEqual([]);
});
