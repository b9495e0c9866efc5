// Writes the report: docs/BENCHMARKS.md (markdown.ts), docs/bench.svg
// (svg.ts) and the README's Benchmarks section (readme.ts) from one run's
// results, either just measured (main.ts) or read back from docs/bench.json
// (render.ts).
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./config.ts";
import { markdown } from "./markdown.ts";
import { readmeSection, updateReadme } from "./readme.ts";
import { chart } from "./svg.ts";
import type { Results } from "./types.ts";

/** The raw figures of the last run, from which the documents can be written again (render.ts). */
export const RESULTS_JSON = join(ROOT, "docs", "bench.json");

/** docs/BENCHMARKS.md, docs/bench.svg and the README's section; returns the markdown. */
export function writeDocuments(results: Results): string {
  const doc = markdown(results);
  writeFileSync(join(ROOT, "docs", "BENCHMARKS.md"), doc);
  writeFileSync(join(ROOT, "docs", "bench.svg"), chart(results));
  const readmePath = join(ROOT, "README.md");
  writeFileSync(readmePath, updateReadme(readFileSync(readmePath, "utf8"), readmeSection(results)));
  return doc;
}
