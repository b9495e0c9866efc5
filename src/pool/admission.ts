// --max-per-source in a pool. Workers are separate processes, so the count
// lives in the master: a worker that accepted asks it ("admit SOURCE") and
// waits for the verdict before serving; the master counts the connection
// until that worker says "idle" again (or dies). Only with the option set:
// without it a worker asks nothing and the fast path pays nothing. One
// round trip over the IPC channel the worker already has, which is lost in
// the noise of a connection's turnaround (docs/DESIGN.md, "Measurements").
import { rejectedLine, SourceLimit, sourceOf } from "../connection/sources.ts";
import type { Address } from "../net/address.ts";
import type { Options } from "../options.ts";
import { close } from "../system/fd.ts";
import { verbose } from "../system/log.ts";
import { isVerdict, type AdmitRequest, type AdmitVerdict } from "./protocol.ts";

/**
 * Worker side, right after accept(): true to serve the connection; false
 * when its source is over the limit, and then the connection is closed.
 */
export async function admitted(options: Options, address: Address, fd: number): Promise<boolean> {
  const max = options.maxPerSource;
  if (max === undefined) return true;
  const source = sourceOf(fd, address);
  if (source === undefined) return true; // peer already gone: serving it costs nothing
  const verdict = new Promise<boolean>((resolve) => {
    const listener = (message: unknown) => {
      if (!isVerdict(message)) return;
      process.off("message", listener);
      resolve(message.admitted);
    };
    process.on("message", listener);
  });
  try {
    process.send?.({ admit: source } satisfies AdmitRequest);
  } catch {
    return true; // master gone: the parent-death signal ends us
  }
  if (await verdict) return true;
  verbose(options, rejectedLine(address, source, max));
  close(fd);
  return false;
}

/** Master side: which worker holds a connection from which source. */
export class Admissions {
  private readonly limit: SourceLimit;
  private readonly held = new Map<number, string>();

  constructor(max: number) {
    this.limit = new SourceLimit(max);
  }

  /** Answers a worker's request; a yes is counted until release(pid). */
  ask(pid: number, request: AdmitRequest, reply: (verdict: AdmitVerdict) => void): void {
    this.release(pid);
    const ok = this.limit.admit(request.admit);
    if (ok) this.held.set(pid, request.admit);
    reply({ admitted: ok });
  }

  /** The worker's connection is over (it said idle, or it ended). */
  release(pid: number): void {
    const source = this.held.get(pid);
    if (source === undefined) return;
    this.held.delete(pid);
    this.limit.release(source);
  }
}
