// The C library through bun:ffi: the one table of the libc calls Bun does
// not expose, and the one way every call made through it reports failure.
// The calls are written beside this file by concern: fd.ts (descriptors,
// pipes, read, write, splice), poll.ts (poll, epoll), socket.ts (a
// listener's and a connection's socket), connect.ts (sockets made here),
// process.ts (pidfds, waiting, exec, prctl), spawn.ts (posix_spawn),
// users.ts (the user and group databases, privileges), files.ts (the
// unlinked body file). bun:ffi works inside the compiled executable.
//
// How a call reports failure, the same rule in every one of those files:
//
// - A function named try* returns a number: what the call gives (bytes, a
//   count, a descriptor) or, when it fails, the errno negated (-EAGAIN).
//   It never throws and allocates nothing. These are the calls whose
//   failure is part of the normal flow, that the caller retries or
//   branches on at each wake-up (EAGAIN: nothing now, EINTR: a signal,
//   EPIPE: the peer has gone): a thrown error there would cost a strerror
//   call and an Error with its stack on every turn of the pool's busiest
//   loops, and a catch block in each.
// - Every other function returns its result or throws SysError, whose
//   message names the call ("unable to accept: Too many open files"): its
//   failure is one the caller can only report, or give up on.
// - But for a few that say "Best effort" in their doc comment, whose
//   failure leaves nothing to do (close, shutdown, a hint such as a pipe's
//   size): they ignore it; and questions answered yes or no (isReadable,
//   reap), where a failed call answers no.
//
// So a reader tells the kind from the name: a try* result is checked for
// a negative number, nothing else is.
import { CString, dlopen, FFIType, read, type Pointer } from "bun:ffi";

const { i32, u32, u64, i64_fast, ptr } = FFIType;

function open() {
  return dlopen("libc.so.6", {
    accept4: { args: [i32, ptr, ptr, i32], returns: i32 },
    bind: { args: [i32, ptr, u32], returns: i32 },
    close: { args: [i32], returns: i32 },
    connect: { args: [i32, ptr, u32], returns: i32 },
    dup2: { args: [i32, i32], returns: i32 },
    epoll_create1: { args: [i32], returns: i32 },
    epoll_ctl: { args: [i32, i32, i32, ptr], returns: i32 },
    epoll_wait: { args: [i32, ptr, i32, i32], returns: i32 },
    execve: { args: [ptr, ptr, ptr], returns: i32 },
    fcntl: { args: [i32, i32, i32], returns: i32 },
    geteuid: { args: [], returns: u32 },
    getpeername: { args: [i32, ptr, ptr], returns: i32 },
    getgrnam_r: { args: [ptr, ptr, ptr, u64, ptr], returns: i32 },
    getppid: { args: [], returns: i32 },
    getpwnam_r: { args: [ptr, ptr, ptr, u64, ptr], returns: i32 },
    getpwuid_r: { args: [u32, ptr, ptr, u64, ptr], returns: i32 },
    getrlimit: { args: [i32, ptr], returns: i32 },
    getsockname: { args: [i32, ptr, ptr], returns: i32 },
    getsockopt: { args: [i32, i32, i32, ptr, ptr], returns: i32 },
    initgroups: { args: [ptr, u32], returns: i32 },
    ioctl: { args: [i32, u64, ptr], returns: i32 },
    listen: { args: [i32, i32], returns: i32 },
    lseek: { args: [i32, i64_fast, i32], returns: i64_fast },
    open: { args: [ptr, i32, u32], returns: i32 },
    pidfd_open: { args: [i32, u32], returns: i32 },
    pipe2: { args: [ptr, i32], returns: i32 },
    poll: { args: [ptr, u64, i32], returns: i32 },
    read: { args: [i32, ptr, u64], returns: i64_fast },
    prctl: { args: [i32, i32, i32, i32, i32], returns: i32 },
    pthread_sigmask: { args: [i32, ptr, ptr], returns: i32 },
    recv: { args: [i32, ptr, u64, i32], returns: i64_fast },
    send: { args: [i32, ptr, u64, i32], returns: i64_fast },
    sendto: { args: [i32, ptr, u32, i32, ptr, u32], returns: i32 },
    setgid: { args: [u32], returns: i32 },
    setgroups: { args: [u32, ptr], returns: i32 },
    setsockopt: { args: [i32, i32, i32, ptr, u32], returns: i32 },
    setuid: { args: [u32], returns: i32 },
    shutdown: { args: [i32, i32], returns: i32 },
    socket: { args: [i32, i32, i32], returns: i32 },
    socketpair: { args: [i32, i32, i32, ptr], returns: i32 },
    // Offsets null (pipes and sockets have none); i64_fast returns a number, plain i64 a BigInt.
    splice: { args: [i32, ptr, i32, ptr, u64, u32], returns: i64_fast },
    strerror: { args: [i32], returns: ptr },
    umask: { args: [u32], returns: u32 },
    waitid: { args: [i32, i32, ptr, i32], returns: i32 },
    waitpid: { args: [i32, ptr, i32], returns: i32 },
    write: { args: [i32, ptr, u64], returns: i64_fast },
    __errno_location: { args: [], returns: ptr },
  }).symbols;
}

// Opened at the first call, not when the module loads: bun:ffi compiles a
// trampoline for every symbol as it opens the library, which -version,
// --help and a usage error never need (docs/DESIGN.md, "The tools"). No
// other work at the top level of these modules either: constants only.
let symbols: ReturnType<typeof open> | undefined;
/** The table, for the modules beside this one: code elsewhere calls their functions, which follow the rule above. */
export const lib = (): ReturnType<typeof open> => (symbols ??= open());

export const EINTR = 4;
export const EAGAIN = 11;
export const EINVAL = 22;
export const EPIPE = 32;
export const ENAMETOOLONG = 36;
export const EPROTO = 71;
export const ECONNABORTED = 103;

/** The O_CLOEXEC bit, which SOCK_CLOEXEC and EPOLL_CLOEXEC share. */
export const O_CLOEXEC = 0o2000000;

/**
 * A failed libc call, named as tcpserver names it ("unable to accept:
 * Too many open files"); `reason` is the C library's text alone, for the
 * messages socket(1) words its own way ("client socket: Connection refused").
 */
export class SysError extends Error {
  readonly reason: string;
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    const reason = strerror(errno);
    super(`unable to ${call}: ${reason}`);
    this.reason = reason;
  }
}

/** The calling thread's errno, right after a call that failed. */
export function errno(): number {
  return read.i32(lib().__errno_location() as Pointer, 0);
}

export function strerror(code: number): string {
  return new CString(lib().strerror(code) as Pointer).toString();
}

/** A throwing function's one check: `result` when the call succeeded, else SysError(`call`, errno). */
export function check(call: string, result: number): number {
  if (result < 0) throw new SysError(call, errno());
  return result;
}

/** A try* function's one return: `result`, or -errno when the call failed. */
export function orErrno(result: number): number {
  return result < 0 ? -errno() : result;
}
