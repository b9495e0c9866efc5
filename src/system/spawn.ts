// posix_spawn(3), for the programs a blocking caller starts and waits for
// itself (connection/process.ts). Its own table: closefrom is glibc 2.34's,
// addchdir_np 2.29's and POSIX_SPAWN_SETSID 2.26's; where one is missing
// (dlopen fails) canSpawn() says so and callers use Bun.spawn.
// Unlike Bun.spawn, every string goes to the kernel as the bytes it is
// given: an environment value that is not UTF-8 (a request's bytes) needs
// no detour.
import { dlopen, FFIType, ptr as pointerTo } from "bun:ffi";
import { SysError } from "./ffi.ts";

const { i32, i16, ptr } = FFIType;

function open() {
  return dlopen("libc.so.6", {
    posix_spawn: { args: [ptr, ptr, ptr, ptr, ptr, ptr], returns: i32 },
    posix_spawn_file_actions_init: { args: [ptr], returns: i32 },
    posix_spawn_file_actions_destroy: { args: [ptr], returns: i32 },
    posix_spawn_file_actions_adddup2: { args: [ptr, i32, i32], returns: i32 },
    posix_spawn_file_actions_addclosefrom_np: { args: [ptr, i32], returns: i32 },
    posix_spawn_file_actions_addchdir_np: { args: [ptr, ptr], returns: i32 },
    posix_spawnattr_init: { args: [ptr], returns: i32 },
    posix_spawnattr_setflags: { args: [ptr, i16], returns: i32 },
    posix_spawnattr_setsigdefault: { args: [ptr, ptr], returns: i32 },
    posix_spawnattr_setsigmask: { args: [ptr, ptr], returns: i32 },
    sigfillset: { args: [ptr], returns: i32 },
    sigemptyset: { args: [ptr], returns: i32 },
  }).symbols;
}
let symbols: ReturnType<typeof open> | null | undefined;

const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const POSIX_SPAWN_SETSID = 0x80;
/** posix_spawnattr_t is 336 bytes and posix_spawn_file_actions_t 80 on 64-bit glibc; room to spare. */
const ATTR_BYTES = 512;
const ACTIONS_BYTES = 128;

/** Whether spawn() works here (glibc 2.34 or later). */
export function canSpawn(): boolean {
  if (symbols === undefined) {
    try {
      symbols = open();
    } catch {
      symbols = null;
    }
  }
  return symbols !== null;
}

/**
 * A NULL-ended table of C strings (argv or envp): `fixed` ones made once,
 * then each call's own after them, in one buffer, valid until the next call.
 */
export class CStrings {
  private readonly keep: Buffer[] = [];
  private table: BigUint64Array;
  /** The table as 32-bit words: a pointer is written as two numbers, with no BigInt made for it. */
  private words: Uint32Array;
  /** The last call's strings: held so that the table's pointers into them stay valid until the next call. */
  private extra: Buffer | undefined;

  constructor(fixed: readonly (string | Uint8Array)[]) {
    this.table = new BigUint64Array(fixed.length + 1);
    this.words = new Uint32Array(this.table.buffer);
    fixed.forEach((s, i) => {
      const bytes = Buffer.concat([typeof s === "string" ? Buffer.from(s) : s, ZERO]);
      this.keep.push(bytes);
      this.point(i, pointerTo(bytes));
    });
  }

  /** Entry `i` of the table points at `address` (little-endian: low word first; x86-64 and arm64 are). */
  private point(i: number, address: number): void {
    this.words[2 * i] = address % 0x100000000;
    this.words[2 * i + 1] = Math.floor(address / 0x100000000);
  }

  /** The table with `extra` after the fixed strings; a string or its bytes, without NUL. */
  with(extra: readonly (string | Uint8Array)[] = []): BigUint64Array {
    const fixed = this.keep.length;
    if (this.table.length < fixed + extra.length + 1) {
      const grown = new BigUint64Array(fixed + extra.length + 1);
      grown.set(this.table.subarray(0, fixed));
      this.table = grown;
      this.words = new Uint32Array(grown.buffer);
    }
    const buffer = (this.extra = strings(extra));
    const base = buffer.length > 0 ? pointerTo(buffer) : 0;
    // As many bytes as characters: every string is ASCII, and its length is its size.
    let characters = 0;
    for (const s of extra) characters += s.length + 1;
    const oneByte = characters === buffer.length;
    let offset = 0;
    extra.forEach((s, i) => {
      this.point(fixed + i, base + offset);
      offset += (typeof s === "string" && !oneByte ? Buffer.byteLength(s) : s.length) + 1;
    });
    this.point(fixed + extra.length, 0);
    return this.table;
  }
}

/**
 * The strings one after the other, each with its NUL. Text alone (an
 * environment mostly is) is encoded in one call, joined; with bytes among
 * it, one string at a time.
 */
function strings(extra: readonly (string | Uint8Array)[]): Buffer {
  if (extra.every((s) => typeof s === "string")) return Buffer.from(extra.length > 0 ? `${extra.join("\0")}\0` : "");
  let bytes = 0;
  for (const s of extra) bytes += (typeof s === "string" ? Buffer.byteLength(s) : s.length) + 1;
  const buffer = Buffer.alloc(bytes); // zeroed: each string's NUL is already there
  let offset = 0;
  for (const s of extra) {
    if (typeof s === "string") offset += buffer.write(s, offset) + 1;
    else {
      buffer.set(s, offset);
      offset += s.length + 1;
    }
  }
  return buffer;
}
const ZERO = Buffer.from([0]);

/** What spawn() starts: tables from CStrings, and how. */
export interface SpawnRequest {
  /** The file executed, NUL-terminated. */
  path: Buffer;
  argv: BigUint64Array;
  envp: BigUint64Array;
  /** Its descriptors 0, 1 and 2; no other is inherited. */
  stdio: readonly [number, number, number];
  /** Its working directory, NUL-terminated; undefined: the caller's. */
  cwd?: Buffer;
  /** A session and process group of its own (setsid): none of the terminal's signals reach it. */
  ownGroup: boolean;
}

const attrs = new Map<boolean, Uint8Array>();
/** The file actions of the last stdio triple and directory: a worker's connections and CGIs mostly get the same. */
let lastActions: { key: string; cwd: Buffer | undefined; actions: Uint8Array } | undefined;

/** Every signal at its default and none blocked (a pool worker blocks SIGCHLD: its programs do not); setsid when asked. */
function attrFor(ownGroup: boolean): Uint8Array {
  let attr = attrs.get(ownGroup);
  if (attr) return attr;
  const s = symbols!;
  attr = new Uint8Array(ATTR_BYTES);
  const set = new Uint8Array(128);
  s.posix_spawnattr_init(attr);
  s.sigfillset(set);
  s.posix_spawnattr_setsigdefault(attr, set);
  s.sigemptyset(set);
  s.posix_spawnattr_setsigmask(attr, set);
  s.posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | (ownGroup ? POSIX_SPAWN_SETSID : 0));
  attrs.set(ownGroup, attr);
  return attr;
}

function actionsFor(stdio: readonly [number, number, number], cwd: Buffer | undefined): Uint8Array {
  const key = stdio.join(",");
  if (lastActions?.key === key && (lastActions.cwd === cwd || (cwd !== undefined && lastActions.cwd?.equals(cwd)))) return lastActions.actions;
  const s = symbols!;
  const actions = new Uint8Array(ACTIONS_BYTES);
  s.posix_spawn_file_actions_init(actions);
  stdio.forEach((fd, target) => s.posix_spawn_file_actions_adddup2(actions, fd, target));
  s.posix_spawn_file_actions_addclosefrom_np(actions, 3);
  if (cwd) s.posix_spawn_file_actions_addchdir_np(actions, cwd); // glibc copies the path
  if (lastActions) s.posix_spawn_file_actions_destroy(lastActions.actions);
  lastActions = { key, cwd, actions };
  return actions;
}

/**
 * Starts a program; its pid. Throws SysError("posix_spawn") when it cannot
 * start (ENOENT, EACCES, a directory it cannot enter: glibc reports the
 * child's failure). Only after canSpawn().
 */
export function spawn(request: SpawnRequest): number {
  const pid = new Int32Array(1);
  const code = symbols!.posix_spawn(pid, request.path, actionsFor(request.stdio, request.cwd), attrFor(request.ownGroup), request.argv, request.envp);
  if (code !== 0) throw new SysError("posix_spawn", code);
  return pid[0];
}
