// Apache as the front end, as the README and man page recipes say: ProxyPass
// to scgi:// and fcgi://, and SetHandler "proxy:fcgi://..." for a cgi-bin
// served by --cgi-root. Debian's apache2 (scripts/install-test-deps.sh), run
// in the foreground with a configuration of its own in a temp dir.
import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { collect, startServer, tempDir, waitFor, type Server, writeExecutable } from "./harness.ts";
import { freePort } from "./gateway-peers.ts";

const APACHE = "/usr/sbin/apache2";
const MODULES = "/usr/lib/apache2/modules";
const noApache = !existsSync(APACHE) || !existsSync(join(MODULES, "mod_proxy_fcgi.so"));
if (noApache) console.warn("apache.test.ts: apache2 is not installed (scripts/install-test-deps.sh installs it); its tests are skipped");

const SHA = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const HASH_CGI = `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho "length $CONTENT_LENGTH"\nhead -c "$CONTENT_LENGTH" | sha256sum\n`;
const ENV_CGI = `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho "cwd $(pwd)"\necho "SCRIPT_NAME=$SCRIPT_NAME"\necho "PATH_INFO=$PATH_INFO"\n`;

const script = (path: string, text: string): string => writeExecutable(path, text);

interface Apache extends AsyncDisposable {
  fetch(path: string, init?: RequestInit): Promise<Response>;
}

/** apache2 in the foreground (-X: one process), everything it writes inside `dir`, with these directives. */
async function startApache(dir: string, directives: string): Promise<Apache> {
  const root = join(dir, "apache");
  mkdirSync(root, { recursive: true });
  const port = freePort();
  const load = ["mpm_event", "authz_core", "alias", "proxy", "proxy_fcgi", "proxy_scgi"].map(
    (m) => `LoadModule ${m}_module ${MODULES}/mod_${m}.so`,
  );
  // Root drops to nobody for its children; the temp dir must let it in.
  chmodSync(dir, 0o755);
  writeFileSync(
    join(root, "apache2.conf"),
    [
      ...load,
      `ServerRoot ${root}`,
      "ServerName localhost",
      `Listen 127.0.0.1:${port}`,
      `PidFile ${root}/apache2.pid`,
      `DefaultRuntimeDir ${root}`,
      `Mutex file:${root} default`,
      `ErrorLog ${root}/error.log`,
      "LogLevel warn",
      "User nobody",
      "Group nogroup",
      directives,
    ].join("\n"),
  );
  const proc = Bun.spawn([APACHE, "-X", "-f", join(root, "apache2.conf"), "-DFOREGROUND"], { stdio: ["ignore", "ignore", "pipe"] });
  const stderr = collect(proc.stderr);
  const stop = async () => {
    proc.kill("SIGKILL");
    await proc.exited;
  };
  const request = (path: string, init?: RequestInit) => fetch(`http://127.0.0.1:${port}${path}`, init);
  try {
    await waitFor(
      "apache2 to listen",
      async () => {
        if (proc.exitCode !== null) {
          const log = existsSync(join(root, "error.log")) ? readFileSync(join(root, "error.log"), "utf8") : "";
          throw new Error(`apache2 exited ${proc.exitCode}: ${stderr.text()} ${log}`);
        }
        return request("/").then(
          () => true,
          () => false,
        );
      },
      10000,
    );
  } catch (e) {
    await stop();
    throw e;
  }
  return { fetch: request, [Symbol.asyncDispose]: stop };
}

/** A request body sent chunked (no Content-Length): a stream of pieces. */
function chunked(body: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= body.length) return controller.close();
      controller.enqueue(body.slice(at, (at += 100_000)));
    },
  });
}

function randomBody(size: number): Uint8Array {
  const body = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) body.set(crypto.getRandomValues(new Uint8Array(Math.min(65536, size - i))), i);
  return body;
}

describe("behind Apache", () => {
  test.skipIf(noApache)("ProxyPass fcgi:// and scgi://, and SetHandler proxy:fcgi:// for a --cgi-root cgi-bin", async () => {
    using dir = tempDir();
    const base = realpathSync(dir.path);
    const hash = script(join(base, "hash.cgi"), HASH_CGI);
    const cgiBin = join(base, "site", "cgi-bin");
    mkdirSync(cgiBin, { recursive: true });
    script(join(cgiBin, "env.cgi"), ENV_CGI);
    await using fcgi: Server = await startServer(["--fastcgi", "-W", "2", "-B", "127.0.0.1", "-p", hash, "-s", "0"]);
    await using scgi: Server = await startServer(["--scgi", "-W", "2", "-B", "127.0.0.1", "-p", hash, "-s", "0"]);
    await using site: Server = await startServer(["--fastcgi", "-W", "2", "-B", "127.0.0.1", "--cgi-root", join(base, "site"), "-s", "0"]);
    await using apache = await startApache(
      base,
      `ProxyPass /fcgi fcgi://127.0.0.1:${fcgi.target}/
ProxyPass /scgi scgi://127.0.0.1:${scgi.target}/
Alias /cgi-bin/ ${cgiBin}/
<Directory ${cgiBin}>
  Require all granted
  <FilesMatch "\\.cgi$">
    SetHandler "proxy:fcgi://127.0.0.1:${site.target}/"
  </FilesMatch>
</Directory>`,
    );
    const body = randomBody(2 << 20);
    const expected = `length ${body.length}\n${SHA(body)}  -\n`;
    // mod_proxy_fcgi passes a chunked body with no CONTENT_LENGTH: socket reads it whole and sets one.
    const fcgiChunked = await apache.fetch("/fcgi/hash", { method: "POST", body: chunked(body) });
    expect(`${fcgiChunked.status} ${await fcgiChunked.text()}`).toBe(`200 ${expected}`);
    const fcgiPlain = await apache.fetch("/fcgi/hash", { method: "POST", body });
    expect(`${fcgiPlain.status} ${await fcgiPlain.text()}`).toBe(`200 ${expected}`);
    const scgiPlain = await apache.fetch("/scgi/hash", { method: "POST", body });
    expect(`${scgiPlain.status} ${await scgiPlain.text()}`).toBe(`200 ${expected}`);
    // The cgi-bin: the program Apache names, run from its directory.
    const env = await apache.fetch("/cgi-bin/env.cgi/extra/path");
    if (env.status !== 200) console.log(site.stderr());
    expect(env.status).toBe(200);
    const text = await env.text();
    expect(text).toContain(`cwd ${cgiBin}\n`);
    expect(text).toContain("PATH_INFO=/extra/path\n");
    expect((await apache.fetch("/cgi-bin/none.cgi")).status).toBe(404);
  }, 30000);
});
