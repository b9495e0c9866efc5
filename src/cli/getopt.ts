// getopt's semantics through node:util parseArgs (citty's own parser folds
// -b/-B and -w/-W together): a command line read as socket(1)'s getopt reads
// it, with getopt's wording for what it refuses. parse.ts checks the result.
import { NAME } from "../version.ts";
import { optionTable, type OptionName } from "./table.ts";
import { util } from "../system/builtins.ts";

/** The getopt wording for what parseArgs rejected. */
function getoptMessage(error: Error & { code?: string }): string {
  const option = error.message.match(/'(-?-?[^',\s]+)/)?.[1] ?? "";
  if (option.startsWith("--")) {
    return error.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE"
      ? `${NAME}: option '${option}' requires an argument`
      : `${NAME}: unrecognized option '${option}'`;
  }
  const letter = option.replace(/^-/, "").slice(0, 1);
  return error.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE"
    ? `${NAME}: option requires an argument -- '${letter}'`
    : `${NAME}: invalid option -- '${letter}'`;
}

const valueLetters = new Set<string>(
  Object.values(optionTable).flatMap((def) => (def.type === "string" && "alias" in def ? [def.alias] : [])),
);
const valueNames = new Set(Object.entries(optionTable).flatMap(([name, def]) => (def.type === "string" ? [name] : [])));

/**
 * getopt takes the word after an option that wants a value as that value,
 * even when it starts with "-" (`-p -x`); parseArgs calls that ambiguous
 * unless it is attached, so attach it.
 */
function attachDashValues(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = argv[i + 1];
    if (arg === "--") return [...out, ...argv.slice(i)];
    const wantsValue =
      (/^-[^-]/.test(arg) && valueLetters.has(arg.slice(-1)) && ![...arg.slice(1, -1)].some((c) => valueLetters.has(c))) ||
      (arg.startsWith("--") && valueNames.has(arg.slice(2)));
    if (wantsValue && next?.startsWith("-")) {
      out.push(arg.startsWith("--") ? `${arg}=${next}` : arg + next);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

/** The command line as getopt read it, with typed readers of its values. */
export interface Read {
  str(k: OptionName): string | undefined;
  flag(k: OptionName): boolean;
  list(k: OptionName): string[];
  positionals: string[];
  tokens: { kind: string; name?: string; value?: string }[];
}

/** getopt's reading of `argv` (through parseArgs), or getopt's complaint about it. */
export function readCommandLine(argv: string[]): Read | string {
  let parsed;
  try {
    parsed = util().parseArgs({
      args: attachDashValues(argv),
      strict: true,
      allowPositionals: true,
      tokens: true, // --allow and --deny are read in the order given
      options: Object.fromEntries(
        Object.entries(optionTable).map(([name, def]) => [
          name,
          { type: def.type, ...("alias" in def && { short: def.alias }), ...("multiple" in def && { multiple: def.multiple }) },
        ]),
      ) as Record<OptionName, { type: "string" | "boolean"; short?: string; multiple?: boolean }>,
    });
  } catch (e) {
    return e instanceof Error ? getoptMessage(e) : "";
  }
  const v: Partial<Record<OptionName, string | boolean | (string | boolean)[]>> = parsed.values;
  return {
    str: (k) => {
      const value = v[k];
      return typeof value === "string" ? value : undefined;
    },
    flag: (k) => v[k] === true,
    list: (k) => {
      const value = v[k];
      return Array.isArray(value) ? value.filter((x) => typeof x === "string") : [];
    },
    positionals: parsed.positionals,
    tokens: parsed.tokens,
  };
}
