// Number and table formatting for the markdown documents.

/** A figure with `digits` decimals; "–" for one not measured (undefined, or NaN read back from JSON's null). */
export const f = (v: number | undefined, digits = 1) => (v !== undefined && Number.isFinite(v) ? v.toFixed(digits) : "–");
/** a / b, NaN when either side is missing (then shown as "–" or as the row's reason). */
export const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined ? a / b : NaN);

/** A markdown table. */
export function table(head: string[], rows: string[][]): string {
  return [head, head.map(() => "---"), ...rows].map((r) => `| ${r.join(" | ")} |`).join("\n");
}
