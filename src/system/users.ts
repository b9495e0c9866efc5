// The user and group databases, read through NSS as id(1) reads them (so
// LDAP and systemd's dynamic users are found), and the privileges -u and -g
// drop to. How each call reports failure: ffi.ts.
import { CString, type Pointer } from "bun:ffi";
import { check, lib, SysError } from "./ffi.ts";

const ERANGE = 34;

/** A user as the passwd database has it. */
export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

/**
 * One getpwnam_r/getpwuid_r/getgrnam_r call: `call(buf, size, result)` fills
 * `entry` (a struct passwd or group) with pointers into the buffer, which
 * grows while it is too small. Returns the buffer, to be kept while the
 * entry's strings are read; undefined when there is no such entry.
 */
function lookupEntry(what: string, call: (buf: Uint8Array, size: number, result: BigUint64Array) => number): Uint8Array | undefined {
  for (let size = 16384; ; size *= 2) {
    const buf = new Uint8Array(size);
    const result = new BigUint64Array(1);
    const code = call(buf, size, result);
    if (code === ERANGE && size < 1 << 24) continue;
    if (code !== 0) throw new SysError(what, code);
    return result[0] === 0n ? undefined : buf;
  }
}

const cString = (text: string): Uint8Array => new TextEncoder().encode(`${text}\0`);

/**
 * struct passwd on 64-bit glibc: char *pw_name, *pw_passwd; uid_t pw_uid
 * (offset 16); gid_t pw_gid (20); char *pw_gecos, *pw_dir, *pw_shell.
 */
function passwdEntry(entry: Uint8Array, buf: Uint8Array | undefined): PasswdEntry | undefined {
  if (buf === undefined) return undefined;
  const view = new DataView(entry.buffer);
  const name = new CString(Number(view.getBigUint64(0, true)) as Pointer).toString(); // a copy, read while buf lives
  return { name, uid: view.getUint32(16, true), gid: view.getUint32(20, true) };
}

export function getpwnam(name: string): PasswdEntry | undefined {
  const entry = new Uint8Array(48);
  return passwdEntry(entry, lookupEntry("getpwnam_r", (buf, size, result) => lib().getpwnam_r(cString(name), entry, buf, size, result)));
}

export function getpwuid(uid: number): PasswdEntry | undefined {
  const entry = new Uint8Array(48);
  return passwdEntry(entry, lookupEntry("getpwuid_r", (buf, size, result) => lib().getpwuid_r(uid, entry, buf, size, result)));
}

/** A group's gid; struct group: char *gr_name, *gr_passwd; gid_t gr_gid (offset 16); char **gr_mem. */
export function getgrnam(name: string): number | undefined {
  const entry = new Uint8Array(32);
  const found = lookupEntry("getgrnam_r", (buf, size, result) => lib().getgrnam_r(cString(name), entry, buf, size, result));
  return found ? new DataView(entry.buffer).getUint32(16, true) : undefined;
}

export function geteuid(): number {
  return lib().geteuid();
}

/**
 * Supplementary groups first (while still root), then the gid, then the
 * uid: a named user gets its groups from the group database (initgroups),
 * anyone else `gid` alone, never root's.
 */
export function dropPrivileges(uid: number | undefined, gid: number, user: string | undefined): void {
  if (user !== undefined) check("initgroups", lib().initgroups(cString(user), gid));
  else check("setgroups", lib().setgroups(1, new Uint32Array([gid])));
  check("setgid", lib().setgid(gid));
  if (uid !== undefined) check("setuid", lib().setuid(uid));
}
