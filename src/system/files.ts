// Files opened through libc rather than node:fs: the unlinked file a
// request body is held in (O_TMPFILE, which node:fs cannot ask for), its
// rewind, /dev/null for the programs (a worker's start loads no node:fs,
// builtins.ts), and the process's umask. How each call reports failure: ffi.ts.
import { check, errno, lib, O_CLOEXEC, SysError } from "./ffi.ts";
import { fs } from "./builtins.ts";

const SEEK_SET = 0;
const O_RDWR = 2;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
/** __O_TMPFILE with O_DIRECTORY, whose value differs by architecture. */
const O_TMPFILE = 0o20000000 | (process.arch === "arm64" ? 0o40000 : 0o200000);
const EISDIR = 21;
const EOPNOTSUPP = 95;

/**
 * A file with no name in `dir`, read-write, close-on-exec, mode 0600
 * (open(2) O_TMPFILE): a request body is held there, on disk rather than
 * in a worker's memory, then given to the CGI as its stdin (a regular
 * file: it reads EOF at the body's end). Its blocks go at its last close,
 * whatever way the process ends. A filesystem without O_TMPFILE (EOPNOTSUPP;
 * EISDIR from a kernel before 3.11): a file made under a random name and
 * unlinked at once, as nginx's client_body_temp_path is.
 */
export function unlinkedFile(dir: string): number {
  const fd = lib().open(Buffer.from(`${dir}\0`), O_TMPFILE | O_RDWR | O_CLOEXEC, 0o600);
  if (fd >= 0) return fd;
  const code = errno();
  if (code !== EOPNOTSUPP && code !== EISDIR) throw new SysError(`create a file in ${dir}`, code);
  const path = `${dir}/socket-body-${process.pid}-${crypto.randomUUID()}`;
  const named = check(`create ${path}`, lib().open(Buffer.from(`${path}\0`), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0o600));
  fs().unlinkSync(path);
  return named;
}

/** `path` opened read-write and close-on-exec (/dev/null, for the programs' ignored stdio). */
export function openReadWrite(path: string): number {
  return check(`open ${path}`, lib().open(Buffer.from(`${path}\0`), O_RDWR | O_CLOEXEC, 0));
}

/** Back to the start of a file (the spooled body, before the CGI reads it). */
export function rewind(fd: number): void {
  check("lseek", Number(lib().lseek(fd, 0, SEEK_SET)));
}

/** Sets the file mode creation mask; the previous one. Cannot fail. */
export function umask(mask: number): number {
  return lib().umask(mask);
}
