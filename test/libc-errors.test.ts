// The one rule for a failed libc call (src/system/ffi.ts), on real
// descriptors: a try* call returns the errno negated and never throws,
// every other call throws a SysError that names the call. Each descriptor
// made here is closed at the end of its test.
import { afterEach, describe, expect, test } from "bun:test";
import { socketPair } from "../src/system/connect.ts";
import { close, pipe, pipeBytes, trySplice, tryRead, tryWrite, SPLICE_F_NONBLOCK } from "../src/system/fd.ts";
import { EAGAIN, SysError } from "../src/system/ffi.ts";
import { tryPoll, POLLIN } from "../src/system/poll.ts";
import { MSG_DONTWAIT, MSG_PEEK, setBacklog, tryAccept, tryRecv, trySend } from "../src/system/socket.ts";

const EBADF = 9;
const ENOTSOCK = 88;

const opened: number[] = [];
/** Descriptors made by a test, closed after it. */
const keep = <T extends number[]>(fds: T): T => {
  opened.push(...fds);
  return fds;
};
afterEach(() => {
  for (const fd of opened.splice(0)) close(fd);
});

/** A descriptor number that is surely not open. */
const notOpen = 1_000_000;

describe("try* calls return -errno", () => {
  test("nothing to read on a non-blocking pipe: -EAGAIN, then the bytes once written", () => {
    const [r, w] = keep(pipe("read"));
    const buf = new Uint8Array(16);
    expect(tryRead(r, buf)).toBe(-EAGAIN);
    expect(tryWrite(w, new TextEncoder().encode("abc"))).toBe(3);
    expect(tryRead(r, buf)).toBe(3);
    expect(new TextDecoder().decode(buf.subarray(0, 3))).toBe("abc");
  });

  test("nothing waiting on a socket: -EAGAIN; a peek leaves the bytes for the next recv", () => {
    const [a, b] = keep(socketPair());
    const buf = new Uint8Array(8);
    expect(tryRecv(b, buf, MSG_DONTWAIT)).toBe(-EAGAIN);
    expect(trySend(a, new Uint8Array([7, 8]), false)).toBe(2);
    expect(tryRecv(b, buf, MSG_PEEK | MSG_DONTWAIT)).toBe(2);
    expect(tryRecv(b, buf, MSG_DONTWAIT)).toBe(2);
    expect([buf[0], buf[1]]).toEqual([7, 8]);
  });

  test("a descriptor that is not open or not a listener: -EBADF, -ENOTSOCK, never a throw", () => {
    const [r] = keep(pipe("read"));
    expect(tryRead(notOpen, new Uint8Array(1))).toBe(-EBADF);
    expect(tryWrite(notOpen, new Uint8Array(1))).toBe(-EBADF);
    expect(trySend(notOpen, new Uint8Array(1), false)).toBe(-EBADF);
    expect(tryAccept(notOpen)).toBe(-EBADF);
    expect(tryAccept(r)).toBe(-ENOTSOCK);
    expect(trySplice(notOpen, r, 1, SPLICE_F_NONBLOCK)).toBe(-EBADF);
  });

  test("poll: nothing ready is 0, a pipe with bytes is 1", () => {
    const [r, w] = keep(pipe("read"));
    const fds = new Int32Array([r, POLLIN]);
    expect(tryPoll(fds, 1, 0)).toBe(0);
    tryWrite(w, new Uint8Array([1]));
    expect(tryPoll(fds, 1, 0)).toBe(1);
  });

  test("splice moves a pipe's bytes to a socket inside the kernel", () => {
    const [r, w] = keep(pipe("read"));
    const [a, b] = keep(socketPair());
    tryWrite(w, new Uint8Array([1, 2, 3]));
    expect(trySplice(r, a, 64, SPLICE_F_NONBLOCK)).toBe(3);
    expect(trySplice(r, a, 64, SPLICE_F_NONBLOCK)).toBe(-EAGAIN);
    expect(tryRecv(b, new Uint8Array(8), MSG_DONTWAIT)).toBe(3);
  });
});

describe("every other call throws a SysError naming the call", () => {
  const thrown = (call: () => unknown): SysError => {
    try {
      call();
    } catch (e) {
      if (e instanceof SysError) return e;
      throw e;
    }
    throw new Error("no SysError was thrown");
  };

  test("listen on a pipe: unable to listen, ENOTSOCK", () => {
    const [r] = keep(pipe());
    const error = thrown(() => setBacklog(r, 16));
    expect(error.call).toBe("listen");
    expect(error.errno).toBe(ENOTSOCK);
    expect(error.reason).toBe("Socket operation on non-socket");
    expect(error.message).toBe("unable to listen: Socket operation on non-socket");
  });

  test("a pipe's byte count on a descriptor that is not open: unable to ioctl, EBADF", () => {
    const error = thrown(() => pipeBytes(notOpen));
    expect([error.call, error.errno, error.message]).toEqual(["ioctl", EBADF, "unable to ioctl: Bad file descriptor"]);
  });
});
