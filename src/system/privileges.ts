// -u USER -g GROUP (tcpserver's options): after binding, so a port below
// 1024 works, the server and everything it starts run as this user/group.
import { readFileSync } from "node:fs";
import { Fatal } from "../fatal.ts";
import { dropPrivileges } from "./libc.ts";

const EXIT_PRIVILEGES = 1;

/** Name or number to id, from /etc/passwd or /etc/group. */
function lookup(file: string, name: string, what: string): { id: number; gid: number } {
  let text = "";
  try {
    text = readFileSync(file, "utf8");
  } catch {
    // only numeric ids then
  }
  for (const line of text.split("\n")) {
    const fields = line.split(":");
    if (fields[0] === name || (/^\d+$/.test(name) && fields[2] === name)) {
      return { id: Number(fields[2]), gid: Number(fields[3]) };
    }
  }
  if (/^\d+$/.test(name)) return { id: Number(name), gid: NaN };
  throw new Fatal(`unknown ${what} ${name}`, EXIT_PRIVILEGES);
}

export interface Identity {
  uid: number | undefined;
  gid: number | undefined;
}

/** Checked before anything is bound, so a typo fails at once. */
export function resolveIdentity(user: string | undefined, group: string | undefined): Identity {
  const u = user === undefined ? undefined : lookup("/etc/passwd", user, "user");
  const g = group === undefined ? undefined : lookup("/etc/group", group, "group").id;
  // -u alone runs with the user's own primary group, as su and tcpserver's -U do.
  const gid = g ?? (u && !Number.isNaN(u.gid) ? u.gid : undefined);
  return { uid: u?.id, gid };
}

export function becomeIdentity(identity: Identity): void {
  if (identity.uid === undefined && identity.gid === undefined) return;
  try {
    dropPrivileges(identity.uid, identity.gid);
  } catch (e) {
    throw new Fatal(`cannot change user or group: ${(e as Error).message}`, EXIT_PRIVILEGES);
  }
}
