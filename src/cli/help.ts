// --help, rendered by citty from the option table. Loaded only when asked
// for: nothing else needs citty at run time.
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

export async function helpText(): Promise<string> {
  const text = `${await renderUsage(command)}\n\n${USAGE}\n${PRESTART_NOTE}${SIGNALS_NOTE}`;
  // citty colours unconditionally; only a terminal should get the escapes.
  return process.stdout.isTTY ? text : Bun.stripANSI(text);
}
