// Client mode: connect (bound first to -B when given), then serve the
// connection like a server would: the program on it, or the copy loop
// between it and stdin/stdout. Exits 0 when the connection is done.
import { resolveHostAll, type Address } from "../net/address.ts";
import type { Options } from "../options.ts";
import { flushStdout } from "../connection/local.ts";
import { serveDescriptor } from "../connection/serve.ts";
import { verbose } from "../system/log.ts";
import { Fatal } from "../fatal.ts";
import { AF_INET, AF_INET6, connectInet, connectUnix } from "../system/connect.ts";
import { strerror, SysError } from "../system/ffi.ts";
import type { Program } from "../connection/program.ts";
import { exitNow } from "../system/signals.ts";

import { errorNumber } from "../fatal.ts";

/** A connected descriptor to `address` (bound first to -B), and the address it reached. */
async function connect(address: Address, bind: string | undefined): Promise<{ fd: number; to: Address }> {
  if (address.kind === "unix") return { fd: await connectOrFail(() => connectUnix(address.path)), to: address };
  const locals = bind === undefined ? undefined : await resolveHostAll(bind);
  // A name's addresses in turn (net/address.ts), as nc, curl and ssh do: the first that connects is used, else the first one's error.
  let first: Fatal | undefined;
  for (const { ip, family } of [address, ...(address.alternatives ?? [])]) {
    const local = locals?.find((l) => l.family === family);
    if (locals && !local) {
      first ??= new Fatal(`client socket: -B ${bind} is IPv${locals[0]!.family}, ${ip} is IPv${family}`, 97 /* EAFNOSUPPORT */);
      continue;
    }
    try {
      const fd = await connectOrFail(() => connectInet(family === 6 ? AF_INET6 : AF_INET, ip, address.port, local?.ip));
      return { fd, to: { ...address, ip, family } };
    } catch (e) {
      if (!(e instanceof Fatal)) throw e;
      first ??= e;
    }
  }
  throw first!;
}

/** socket(1) exits with the errno: 111 for refused, 2 for a missing path. */
async function connectOrFail(connectTo: () => Promise<number>): Promise<number> {
  try {
    return await connectTo();
  } catch (e) {
    if (e instanceof SysError) throw new Fatal(`client socket: ${e.reason}`, e.errno);
    throw e;
  }
}

export async function runClient(options: Options, address: Address, program: Program | undefined): Promise<never> {
  const { fd, to } = await connect(address, options.bind);
  verbose(options, to.kind === "unix" ? `unix: connected to ${to.path}` : `inet: connected to ${to.ip} port ${to.port}`);
  const error = await serveDescriptor(fd, to, options, program);
  await flushStdout();
  // A reset (or another socket error) ends the client as socket(1) reports
  // socket errors: the C library's text, and the errno as status (104).
  const errno = Math.abs(errorNumber(error) ?? 0);
  if (errno > 0 && errno < 256) throw new Fatal(`client socket: ${strerror(errno)}`, errno);
  return exitNow(0);
}
