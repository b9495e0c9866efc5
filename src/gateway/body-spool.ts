// A FastCGI body with no CONTENT_LENGTH (Apache's mod_proxy_fcgi sends a
// chunked one so), taken in whole before the CGI starts, so that the CGI
// gets its CONTENT_LENGTH (RFC 3875 4.2): into a memfd, within
// LIMITS.spooledBody. One helper for both kinds of FastCGI connection.
import { writeSync } from "node:fs";
import { memfd, rewind } from "../system/libc.ts";
import { LIMITS } from "./cgi.ts";
import type { Variable } from "./variables.ts";

export interface BodySpool {
  /** The request's variables, to run the CGI with once the body has ended. */
  variables: Variable[];
  /** The memfd, made at the first byte (none for an empty body). */
  fd: number | undefined;
  size: number;
}

export const newSpool = (variables: Variable[]): BodySpool => ({ variables, fd: undefined, size: 0 });

/** One record's bytes into the spool; why the connection is dropped when they pass the limit. */
export function spoolBytes(spool: BodySpool, content: Uint8Array): string | undefined {
  const limit = LIMITS.spooledBody;
  if (spool.size + content.length > limit) return `a body without CONTENT_LENGTH over the ${limit >> 20} MiB limit`;
  spool.fd ??= memfd("fastcgi-body");
  for (let at = 0; at < content.length; ) at += writeSync(spool.fd, content.subarray(at));
  spool.size += content.length;
  return undefined;
}

/**
 * The body has ended: the CGI's variables with CONTENT_LENGTH its size (the
 * web server's own, empty or absent, stays when there is none), and its
 * stdin, the memfd rewound. The caller closes spool.fd once the CGI has it.
 */
export function spooledInput(spool: BodySpool): { variables: Variable[]; stdin: number | "ignore" } {
  const { variables, fd, size } = spool;
  if (fd !== undefined) rewind(fd);
  return {
    variables: size === 0 ? variables : [...variables.filter(([n]) => n !== "CONTENT_LENGTH"), ["CONTENT_LENGTH", String(size)]],
    stdin: fd ?? "ignore",
  };
}
