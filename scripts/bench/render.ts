// Writes docs/BENCHMARKS.md, docs/bench.svg and the README's Benchmarks
// section again from docs/bench.json, the raw figures of the last run,
// without measuring anything: after a change to the report's modules
// (report.ts and what it calls: markdown.ts, svg.ts, readme.ts).
// `bun scripts/bench/render.ts`
import { readFileSync } from "node:fs";
import { log } from "./config.ts";
import { RESULTS_JSON, writeDocuments } from "./report.ts";
import type { Results } from "./types.ts";

// JSON has no NaN and writes it as null: read null back as NaN ("not measured", shown as "–").
writeDocuments(JSON.parse(readFileSync(RESULTS_JSON, "utf8"), (_key, value: unknown) => (value === null ? NaN : value)) as Results);
log("wrote docs/BENCHMARKS.md, docs/bench.svg and the README's Benchmarks section from docs/bench.json");
