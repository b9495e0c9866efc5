// Client mode: connect (bound first to -B when given), then serve the
// connection like a server would: the program on it, or the copy loop
// between it and stdin/stdout. Exits 0 when the connection is done.
import { resolveHost, type Address } from "../net/address.ts";
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

async function connect(address: Address, bind: string | undefined): Promise<number> {
  try {
    if (address.kind === "unix") return connectUnix(address.path);
    let localIp: string | undefined;
    if (bind !== undefined) {
      const local = await resolveHost(bind);
      if (local.family !== address.family) {
        throw new Fatal(`client socket: -B ${bind} is IPv${local.family}, ${address.ip} is IPv${address.family}`, 97 /* EAFNOSUPPORT */);
      }
      localIp = local.ip;
    }
    return connectInet(address.family === 6 ? AF_INET6 : AF_INET, address.ip, address.port, localIp);
  } catch (e) {
    // socket(1) exits with the errno: 111 for refused, 2 for a missing path.
    if (e instanceof SysError) throw new Fatal(`client socket: ${e.reason}`, e.errno);
    throw e;
  }
}

export async function runClient(options: Options, address: Address, program: Program | undefined): Promise<never> {
  const fd = await connect(address, options.bind);
  verbose(options, address.kind === "unix" ? `unix: connected to ${address.path}` : `inet: connected to ${address.ip} port ${address.port}`);
  const error = await serveDescriptor(fd, address, options, program);
  await flushStdout();
  // A reset (or another socket error) ends the client as socket(1) reports
  // socket errors: the C library's text, and the errno as status (104).
  const errno = Math.abs(errorNumber(error) ?? 0);
  if (errno > 0 && errno < 256) throw new Fatal(`client socket: ${strerror(errno)}`, errno);
  return exitNow(0);
}
