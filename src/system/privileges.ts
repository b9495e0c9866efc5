// -u USER -g GROUP (tcpserver's options): after binding, so a port below
// 1024 works, the server and everything it starts run as this user/group.
// Names come from the passwd and group databases through NSS (getpwnam_r,
// getgrnam_r), so LDAP or systemd users count as they do for id(1).
import { Fatal } from "../fatal.ts";
import { strerror } from "./ffi.ts";
import { dropPrivileges, getgrnam, getpwnam, getpwuid, type PasswdEntry } from "./users.ts";

import { errorNumber, errorText } from "../fatal.ts";
import { fs } from "./builtins.ts";

const EXIT_PRIVILEGES = 1;
const MAX_ID = 0xfffffffe; // (uid_t)-1 means "unchanged" to the kernel

/** A number that can be an id, or undefined. */
function numeric(name: string): number | undefined {
  return /^\d+$/.test(name) && Number(name) <= MAX_ID ? Number(name) : undefined;
}

function lookup<T>(what: string, name: string, find: () => T | undefined): T | undefined {
  try {
    return find();
  } catch (e) {
    throw new Fatal(`cannot look up ${what} ${name}: ${errorText(e)}`, EXIT_PRIVILEGES);
  }
}

/** Who socket becomes; gid is always known, so no group of root's survives. */
export interface Identity {
  uid: number | undefined;
  gid: number;
  /** The user's name in the passwd database: its supplementary groups come from the group database. */
  user: string | undefined;
}

/** Checked before anything is bound, so a typo fails at once. Undefined: neither -u nor -g. */
export function resolveIdentity(user: string | undefined, group: string | undefined): Identity | undefined {
  if (user === undefined && group === undefined) return undefined;
  let entry: PasswdEntry | undefined;
  let uid: number | undefined;
  if (user !== undefined) {
    const id = numeric(user);
    entry = lookup("user", user, () => getpwnam(user) ?? (id === undefined ? undefined : getpwuid(id)));
    uid = entry?.uid ?? id;
    if (uid === undefined) throw new Fatal(`unknown user ${user}`, EXIT_PRIVILEGES);
  }
  let gid: number | undefined;
  if (group !== undefined) {
    gid = lookup("group", group, () => getgrnam(group)) ?? numeric(group);
    if (gid === undefined) throw new Fatal(`unknown group ${group}`, EXIT_PRIVILEGES);
  }
  // -u alone runs with the user's own primary group, as su and tcpserver's -U do.
  gid ??= entry?.gid;
  if (gid === undefined) throw new Fatal(`user ${user} has no passwd entry, so no group to run as: give -g`, EXIT_PRIVILEGES);
  return { uid, gid, user: entry?.name };
}

/**
 * The server's UNIX socket file goes to the identity socket will run as
 * (right after the bind, still privileged): so that user may connect with
 * --mode 660, and socket may remove the file at exit.
 */
export function giveSocketFile(path: string, identity: Identity | undefined): void {
  if (identity === undefined) return;
  try {
    fs().chownSync(path, identity.uid ?? -1, identity.gid);
  } catch (e) {
    const errno = errorNumber(e);
    throw new Fatal(`cannot give ${path} to user or group: ${errno ? strerror(Math.abs(errno)) : errorText(e)}`, EXIT_PRIVILEGES);
  }
}

export function becomeIdentity(identity: Identity | undefined): void {
  if (identity === undefined) return;
  try {
    dropPrivileges(identity.uid, identity.gid, identity.user);
  } catch (e) {
    throw new Fatal(`cannot change user or group: ${errorText(e)}`, EXIT_PRIVILEGES);
  }
}
