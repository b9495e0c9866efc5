// systemd socket activation (sd_listen_fds(3)): `-s` with no port or path
// serves the listening socket the service manager passed as descriptor 3,
// when LISTEN_PID names this process and LISTEN_FDS is 1. With Accept=no
// the socket is a listener, and socket (or its pool) does the accepting.
import { Fatal } from "../fatal.ts";
import { setCloexec } from "../system/fd.ts";
import { type Endpoint, localEndpoint, socketKind } from "../system/socket.ts";

import { errorText } from "../fatal.ts";

/** SD_LISTEN_FDS_START: the first passed descriptor. */
export const PASSED_FD = 3;
const EXIT_USAGE = 15;

/**
 * USR2: an old pool master started this process as its successor, with its
 * listening socket as fd 3 and this variable set to its pid. The socket is
 * served as a passed one (LISTEN_FDS=1; LISTEN_PID can only be set here, as
 * Bun cannot run code between fork and exec), whatever the command line says.
 */
export const SUCCESSOR_ENV = "SOCKET_SUCCESSOR_OF";

/** Whether this process is a USR2 successor; its markers leave the environment. */
export function takeSuccession(): boolean {
  const old = process.env[SUCCESSOR_ENV];
  delete process.env[SUCCESSOR_ENV];
  if (old === undefined) return false;
  process.env.LISTEN_PID = String(process.pid); // so that `-s` alone parses as the passed socket
  process.env.LISTEN_FDS = "1";
  return true;
}

/** Whether the service manager passed this process sockets (the parser asks, for `-s` alone). */
export function socketsPassed(): boolean {
  return process.env.LISTEN_PID === String(process.pid);
}

/**
 * The passed socket's address (TCP or UNIX, from getsockname). The
 * variables are unset, so programs never see them (sd_listen_fds with
 * unset_environment).
 */
export function passedSocket(): Endpoint {
  const { LISTEN_FDS } = process.env;
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_FDNAMES;
  if (LISTEN_FDS !== "1") {
    throw new Fatal(`LISTEN_FDS is ${LISTEN_FDS ?? "unset"}; socket serves exactly one passed socket`, EXIT_USAGE);
  }
  let endpoint;
  let kind;
  try {
    kind = socketKind(PASSED_FD);
    endpoint = localEndpoint(PASSED_FD);
    // Programs must not inherit the listener (they would hold the port).
    setCloexec(PASSED_FD);
  } catch (e) {
    throw new Fatal(`descriptor ${PASSED_FD} from the service manager: ${errorText(e)}`, EXIT_USAGE);
  }
  // A datagram socket (or one not listening) would make every accept fail.
  if (!kind.stream || !kind.listening) {
    throw new Fatal(`descriptor ${PASSED_FD} from the service manager is not a listening stream socket (ListenStream=, Accept=no)`, EXIT_USAGE);
  }
  return endpoint;
}
