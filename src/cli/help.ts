// --help, rendered by citty from the option table, then fitted to the
// terminal: citty pads every row to its longest description (about 180
// columns), which an 80-column terminal shows as broken lines. Loaded only
// when asked for: nothing else needs citty at run time.
import { defineCommand, renderUsage } from "citty";
import { NAME, VERSION } from "../version.ts";
import { optionTable, PRESTART_NOTE, SIGNALS_NOTE, USAGE } from "./table.ts";

const command = defineCommand({
  meta: { name: NAME, version: VERSION, description: "Shell access to TCP and UNIX-domain sockets, with a prefork pool" },
  args: {
    ...optionTable,
    destination: { type: "positional", valueHint: "host port | -s port | /path", description: "Where to connect, or with -s where to listen (none: the socket systemd passed)", required: false },
  },
});

/** The widest help there is, and the narrowest it is fitted to (a COLUMNS of 20 would leave no room for a word). */
const WIDEST = 80;
const NARROWEST = 40;
/** Where a row's description starts: names up to this long share its line. */
const DESCRIPTION_AT = 28;

/** 80 columns, or COLUMNS when it is set and smaller (a terminal or a pipe alike). */
export function helpWidth(columns = process.env.COLUMNS): number {
  const n = Number(columns);
  return Number.isInteger(n) && n > 0 ? Math.max(NARROWEST, Math.min(WIDEST, n)) : WIDEST;
}

export async function helpText(width = helpWidth()): Promise<string> {
  const usage = wrap(USAGE, "", " ".repeat("Usage: ".length), width);
  // citty colours in a terminal; the escapes would count as columns, and a pipe must not get them anyway.
  return `${fitHelp(Bun.stripANSI(await renderUsage(command)), width)}\n\n${usage.join("\n")}\n${fitHelp(PRESTART_NOTE + SIGNALS_NOTE, width)}`;
}

/** An option's or argument's row as citty renders it: padded name, four or more blanks, description. */
const ROW = /^\s+(-\S.*?|[A-Z]+=\S.*?)\s{4,}(\S.*)$/;
/** A line with a column of its own (a signal's name, then its meaning): continuation lines hang under the second column. */
const COLUMNED = /^(\s*\S+\s{2,})\S/;
/** A line that goes on a paragraph: text from the margin, no column of its own. */
const PROSE = /^\S(?!.*\S\s{2,}\S)/;

/** Every line within `width` columns, cut at blanks, without trailing blanks; a paragraph of prose is filled again. */
export function fitHelp(text: string, width: number): string {
  const out: string[] = [];
  const lines = text.split("\n").map((line) => line.trimEnd());
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const row = line.match(ROW);
    if (row) {
      const [, name, description] = row;
      const head = `  ${name}`;
      const indent = " ".repeat(DESCRIPTION_AT);
      if (head.length + 2 <= DESCRIPTION_AT) out.push(...wrap(description, head.padEnd(DESCRIPTION_AT), indent, width));
      else out.push(head, ...wrap(description, indent, indent, width));
      continue;
    }
    const margin = line.slice(0, line.search(/\S|$/));
    if (margin === "" && line !== "") {
      // Prose: the paragraph's lines (up to a blank one) as one text.
      let paragraph = line;
      while (i + 1 < lines.length && PROSE.test(lines[i + 1])) paragraph += ` ${lines[++i]}`;
      out.push(...wrap(paragraph, "", "", width));
      continue;
    }
    // A column of its own (a signal's name): kept as it is, the text after it wrapped under it.
    const head = line.match(COLUMNED)?.[1] ?? margin;
    const under = " ".repeat(head.length);
    let text = line.slice(head.length);
    while (head !== margin && i + 1 < lines.length && lines[i + 1].startsWith(under) && /^\S/.test(lines[i + 1].slice(under.length))) text += ` ${lines[++i].slice(under.length)}`;
    out.push(...wrap(text, head, under, width));
  }
  return out.join("\n");
}

/** `text` in lines of at most `width` columns, the first after `first`, the rest after `indent`; a word too long for any line stands alone. */
export function wrap(text: string, first: string, indent: string, width: number): string[] {
  const lines: string[] = [];
  let line = first;
  let empty = true;
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (!empty && line.length + 1 + word.length > width) {
      lines.push(line);
      line = indent;
      empty = true;
    }
    line += empty ? word : ` ${word}`;
    empty = false;
  }
  lines.push(line.trimEnd());
  return lines;
}
