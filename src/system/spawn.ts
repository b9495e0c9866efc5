// posix_spawn(3) for a pool worker's programs, in a dlopen table of its own
// (opened at the first canSpawn, as ffi.ts's is at the first call): its
// closefrom action is glibc 2.34's, and where it is missing (dlopen fails)
// the caller starts programs with Bun.spawn instead. How each call reports
// failure: ffi.ts.
import { dlopen, FFIType, ptr as pointerTo } from "bun:ffi";
import { SysError } from "./ffi.ts";

const { i16, i32, ptr } = FFIType;

function openSpawn() {
  return dlopen("libc.so.6", {
    posix_spawn: { args: [ptr, ptr, ptr, ptr, ptr, ptr], returns: i32 },
    posix_spawn_file_actions_init: { args: [ptr], returns: i32 },
    posix_spawn_file_actions_destroy: { args: [ptr], returns: i32 },
    posix_spawn_file_actions_adddup2: { args: [ptr, i32, i32], returns: i32 },
    posix_spawn_file_actions_addclosefrom_np: { args: [ptr, i32], returns: i32 },
    posix_spawnattr_init: { args: [ptr], returns: i32 },
    posix_spawnattr_setflags: { args: [ptr, i16], returns: i32 },
    posix_spawnattr_setsigdefault: { args: [ptr, ptr], returns: i32 },
    posix_spawnattr_setsigmask: { args: [ptr, ptr], returns: i32 },
    sigfillset: { args: [ptr], returns: i32 },
    sigemptyset: { args: [ptr], returns: i32 },
  }).symbols;
}
type SpawnSymbols = ReturnType<typeof openSpawn>;
/** Undefined until the first canSpawn; null where this libc has not the calls. */
let spawnSymbols: SpawnSymbols | null | undefined;

const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
/** posix_spawnattr_t is 336 bytes and posix_spawn_file_actions_t 80 on 64-bit glibc; room to spare. */
const ATTR_BYTES = 512;
const ACTIONS_BYTES = 128;
let spawnAttr: Uint8Array | undefined;
/** The file actions of the last stdio triple: a worker's connections mostly get the same descriptor number. */
let lastActions: { key: string; actions: Uint8Array } | undefined;

/** Whether spawnProgram works here (glibc 2.34 or later). */
export function canSpawn(): boolean {
  if (spawnSymbols === undefined) {
    try {
      spawnSymbols = openSpawn();
    } catch {
      spawnSymbols = null;
    }
  }
  return spawnSymbols !== null;
}

/**
 * argv or envp for spawnProgram: C strings made once, and a NULL-ended
 * table of pointers to them, with room for `spare` strings of a call's own.
 */
export class StringTable {
  private readonly keep: Buffer[] = [];
  /** This call's own strings, held until the next. */
  private extra: Buffer | undefined;
  private readonly table: BigUint64Array;
  private readonly fixed: number;

  constructor(strings: readonly string[], private readonly spare = 0) {
    this.fixed = strings.length;
    this.table = new BigUint64Array(strings.length + spare + 1);
    strings.forEach((s, i) => {
      const bytes = Buffer.from(`${s}\0`);
      this.keep.push(bytes);
      this.table[i] = BigInt(pointerTo(bytes));
    });
  }

  /** The table with `extra` after the fixed strings (valid until the next call): one buffer for them all. */
  with(extra: readonly string[] = []): BigUint64Array {
    if (extra.length > this.spare) throw new RangeError("StringTable: more strings than its spare room");
    let bytes = 0;
    for (const s of extra) bytes += Buffer.byteLength(s) + 1;
    const buffer = Buffer.alloc(bytes); // zeroed: each string's NUL is already there
    const base = bytes > 0 ? pointerTo(buffer) : 0;
    let offset = 0;
    extra.forEach((s, i) => {
      this.table[this.fixed + i] = BigInt(base + offset);
      offset += buffer.write(s, offset) + 1;
    });
    this.table[this.fixed + extra.length] = 0n;
    this.extra = buffer;
    return this.table;
  }
}

/** Every signal at its default and none blocked in the child, as Bun.spawn starts it: made once. */
function defaultSignals(s: SpawnSymbols): Uint8Array {
  const attr = new Uint8Array(ATTR_BYTES);
  const set = new Uint8Array(128);
  s.posix_spawnattr_init(attr);
  s.sigfillset(set);
  s.posix_spawnattr_setsigdefault(attr, set);
  s.sigemptyset(set);
  s.posix_spawnattr_setsigmask(attr, set);
  s.posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  return attr;
}

/** `stdio` as descriptors 0-2 and nothing else (closefrom 3); kept while the next call has the same triple. */
function stdioActions(s: SpawnSymbols, stdio: readonly [number, number, number]): Uint8Array {
  const key = stdio.join(",");
  if (lastActions?.key === key) return lastActions.actions;
  if (lastActions) s.posix_spawn_file_actions_destroy(lastActions.actions);
  const actions = new Uint8Array(ACTIONS_BYTES);
  s.posix_spawn_file_actions_init(actions);
  stdio.forEach((fd, target) => s.posix_spawn_file_actions_adddup2(actions, fd, target));
  s.posix_spawn_file_actions_addclosefrom_np(actions, 3);
  lastActions = { key, actions };
  return actions;
}

/**
 * Starts `path` with `stdio` as its descriptors 0-2 and no other (closefrom
 * 3), every signal at its default and none blocked, as Bun.spawn does; the
 * pid. Throws SysError("posix_spawn") when it cannot start (ENOENT, EACCES:
 * glibc reports the exec's failure). Only after canSpawn() said yes.
 */
export function spawnProgram(path: Buffer, argv: BigUint64Array, envp: BigUint64Array, stdio: readonly [number, number, number]): number {
  const s = spawnSymbols;
  if (!s) throw new Error("spawnProgram: posix_spawn is not available (ask canSpawn first)");
  spawnAttr ??= defaultSignals(s);
  const pid = new Int32Array(1);
  const code = s.posix_spawn(pid, path, stdioActions(s, stdio), spawnAttr, argv, envp);
  if (code !== 0) throw new SysError("posix_spawn", code);
  return pid[0];
}
