// --request-timeout against CGIs that try to outlive it: a child that made
// a process group of its own (setpgid, as job control does) is in the
// CGI's session still and goes with it; a CGI stopped (SIGSTOP) is
// resumed after its TERM, so it acts on it rather than waiting for the
// KILL; one that ignores TERM, under a --timeout that comes before its
// KILL, still gets its END_REQUEST. Each time the next request on the kept
// connection is served.
// FastCGI spoken directly, and a plain -p connection, in a pool (-W 1) and
// in the classic server.
import { describe, expect, test } from "bun:test";
import { existsSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { isAlive, pidWritten, startServer, tempDir, waitFor, writeExecutable } from "./harness.ts";
import { converse, endRequests, fcgiRequest, parseRecords } from "./gateway-peers.ts";

/** How long the end may take past the second of --request-timeout: the KILL comes a second after the TERM. */
const SLACK_MS = 2500;

/** A FastCGI server under --request-timeout 1 with `scripts` in its --cgi-root, and a kept connection to ask it on. */
async function serve(args: string[], scripts: (dir: string) => Record<string, string>, check: (dir: string, ask: (id: number, script: string) => Promise<string>, cgi: Record<string, string>) => Promise<void>): Promise<void> {
  using tmp = tempDir();
  const dir = realpathSync(tmp.path);
  const cgi = Object.fromEntries(Object.entries(scripts(dir)).map(([name, text]) => [name, writeExecutable(join(dir, `${name}.cgi`), text)]));
  const quick = writeExecutable(join(dir, "quick.cgi"), `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nquick\\n'\n`);
  await using server = await startServer(["--fastcgi", ...args, "--cgi-root", dir, "--request-timeout", "1", "-s", join(dir, "app.sock")]);
  const conn = await converse(server.target);
  let asked = 0;
  const ask = async (id: number, script: string) => {
    conn.send(fcgiRequest(id, [["SCRIPT_FILENAME", script], ["REQUEST_METHOD", "GET"]], undefined, true));
    asked = id;
    return parseRecords(await conn.until(`END_REQUEST ${id}`, (d) => endRequests(parseRecords(d)).length === id)).stdout;
  };
  try {
    await check(dir, ask, cgi);
    expect(await ask(asked + 1, quick)).toEndWith("quick\n");
  } finally {
    conn.close();
  }
}

const GATEWAY_TIMEOUT = "Status: 504 Gateway Timeout\r\nContent-Type: text/plain\r\n\r\n504 Gateway Timeout\n";

describe("--request-timeout ends what a CGI tried to keep", () => {
  for (const args of [["-W", "1"], ["-l", "-f"]]) {
    test(`${args.join(" ")}: a child in a process group of its own (setpgid) is ended with the CGI; the next request is served`, async () => {
      let child: number | undefined;
      try {
        await serve(
          args,
          (dir) => ({ escaping: `#!/bin/sh\nperl -e 'setpgrp(0, 0); exec "sleep", "300"' </dev/null >/dev/null 2>&1 &\necho $! > ${dir}/child.pid\necho $$ > ${dir}/escaping.pid\nexec sleep 300\n` }),
          async (dir, ask, cgi) => {
            expect(await ask(1, cgi.escaping)).toBe(GATEWAY_TIMEOUT);
            child = await pidWritten(dir, "child.pid");
            const leader = await pidWritten(dir, "escaping.pid");
            await waitFor("the CGI and its child in a group of its own to end", () => !isAlive(leader) && !isAlive(child!), SLACK_MS);
          },
        );
      } finally {
        if (child !== undefined && isAlive(child)) process.kill(child, "SIGKILL");
      }
    }, 20_000);

    test(`${args.join(" ")}: a CGI stopped by SIGSTOP is resumed after its TERM and acts on it (its trap runs, a KILL would not let it); the next request is served`, async () => {
      await serve(
        args,
        // Stops itself; its TERM trap runs only if something resumes it.
        (dir) => ({ stopped: `#!/bin/sh\ntrap 'echo yes > ${dir}/termed; exit 1' TERM\necho $$ > ${dir}/stopped.pid\nkill -STOP $$\nsleep 300\n` }),
        async (dir, ask, cgi) => {
          expect(await ask(1, cgi.stopped)).toBe(GATEWAY_TIMEOUT);
          await waitFor("the stopped CGI to end", async () => !isAlive(await pidWritten(dir, "stopped.pid")), SLACK_MS);
          expect(existsSync(join(dir, "termed"))).toBe(true);
        },
      );
    }, 20_000);

    test(`${args.join(" ")}: with --timeout longer than it, a CGI that ignores TERM (KILL a second later, past --timeout) still gets its END_REQUEST after the 504, and the connection serves on`, async () => {
      await serve(
        [...args, "--timeout", "1.5"],
        (dir) => ({ stubborn: `#!/bin/sh\ntrap '' TERM\necho $$ > ${dir}/stubborn.pid\nwhile :; do sleep 0.1; done\n` }),
        async (dir, ask, cgi) => {
          expect(await ask(1, cgi.stubborn)).toBe(GATEWAY_TIMEOUT);
          expect(isAlive(await pidWritten(dir, "stubborn.pid"))).toBe(false); // its END_REQUEST came at its exit
        },
      );
    }, 20_000);
  }
});

describe("--request-timeout on a plain -p connection", () => {
  for (const args of [["-W", "1"], ["-l", "-f"]]) {
    test(`${args.join(" ")}: the program's child in a process group of its own is ended with it`, async () => {
      using dir = tempDir();
      const program = writeExecutable(
        join(dir.path, "prog"),
        `#!/bin/sh\nperl -e 'setpgrp(0, 0); exec "sleep", "300"' </dev/null >/dev/null 2>&1 &\necho $! > ${dir.path}/child.pid\necho $$ > ${dir.path}/prog.pid\nexec sleep 300\n`,
      );
      await using server = await startServer([...args, "--request-timeout", "1", "-p", program, "-s", join(dir.path, "plain.sock")]);
      const client = await Bun.connect({ unix: String(server.target), socket: { data() {} } });
      let child: number | undefined;
      try {
        child = await pidWritten(dir.path, "child.pid");
        const leader = await pidWritten(dir.path, "prog.pid");
        await waitFor("the program and its child in a group of its own to end", () => !isAlive(leader) && !isAlive(child!), 1000 + SLACK_MS);
      } finally {
        client.terminate();
        if (child !== undefined && isAlive(child)) process.kill(child, "SIGKILL");
      }
    }, 20_000);
  }
});
