// Apache as the front end, as the README and man page recipes say: ProxyPass
// to scgi:// and fcgi://, and SetHandler "proxy:fcgi://..." for a cgi-bin
// served by --cgi-root. Debian's apache2 (scripts/install-test-deps.sh), run
// in the foreground with a configuration of its own in a temp dir.
import { describe, expect, test } from "bun:test";
import { mkdirSync, realpathSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { startServer, tempDir, type Server, writeExecutable } from "./harness.ts";
import { noApache, startApache } from "./gateway-peers.ts";

if (noApache) console.warn("apache.test.ts: apache2 is not installed (scripts/install-test-deps.sh installs it); its tests are skipped");

const SHA = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const HASH_CGI = `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho "length $CONTENT_LENGTH"\nhead -c "$CONTENT_LENGTH" | sha256sum\n`;
const ENV_CGI = `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho "cwd $(pwd)"\necho "SCRIPT_NAME=$SCRIPT_NAME"\necho "PATH_INFO=$PATH_INFO"\n`;

const script = (path: string, text: string): string => writeExecutable(path, text);

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
