// Bytes stay bytes: a request's values that are not UTF-8 (FastCGI and SCGI
// pairs are bytes; nginx decodes %E9 in a URI to the byte 0xE9) reach the
// CGI's environment as they came, not as U+FFFD.
import { describe, expect, test } from "bun:test";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { exchange, startServer, tempDir } from "./harness.ts";
import { begin, parseRecords, record } from "./gateway-peers.ts";

// PATH_INFO's bytes in hex, and its working directory (the program's, also when started through socket's re-exec).
const HEX_CGI = `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nprintf %s "$PATH_INFO" | od -An -tx1 | tr -s ' \\n' ' '\necho\necho "cwd $(pwd) $REQUEST_METHOD"\n`;
const CAFE = Buffer.from([0x2f, 0x63, 0x61, 0x66, 0xe9, 0x2e, 0x74, 0x78, 0x74]); // "/caf\xe9.txt"
const HEX = " 2f 63 61 66 e9 2e 74 78 74 ";

/** Name-value pairs whose values are bytes (the harness's pairs() encodes strings as UTF-8). */
function bytePairs(vars: [string, Uint8Array][]): Buffer {
  return Buffer.concat(vars.flatMap(([n, v]) => [Buffer.from([n.length, v.length]), Buffer.from(n), Buffer.from(v)]));
}

describe.each([
  ["-W 2", ["-W", "2"]],
  ["-l -f", ["-l", "-f"]],
])("with %s", (_name, args) => {
  test("FastCGI and SCGI: a PATH_INFO of bytes that are not UTF-8 reaches the CGI byte for byte", async () => {
    using dir = tempDir();
    const cgi = join(dir.path, "hex.cgi");
    writeFileSync(cgi, HEX_CGI);
    chmodSync(cgi, 0o755);
    await using fcgi = await startServer(["--fastcgi", ...args, "-p", cgi, "-s", "0"]);
    await using scgi = await startServer(["--scgi", ...args, "-p", cgi, "-s", "0"]);
    const params = bytePairs([["REQUEST_METHOD", Buffer.from("GET")], ["PATH_INFO", CAFE], ["CONTENT_LENGTH", Buffer.from("0")]]);
    const fReply = await exchange(fcgi.target, Buffer.concat([begin(1), record(4, 1, params), record(4, 1), record(5, 1)]));
    const fText = parseRecords(fReply.data).stdout;
    expect(fText).toContain(HEX);
    expect(fText).toContain(`cwd ${dir.path} GET`);
    const header = Buffer.concat([Buffer.from("CONTENT_LENGTH\x000\x00SCGI\x001\x00REQUEST_METHOD\x00GET\x00PATH_INFO\x00"), CAFE, Buffer.from([0])]);
    const sReply = await exchange(scgi.target, Buffer.concat([Buffer.from(`${header.length}:`), header, Buffer.from(",")]));
    expect(sReply.data.toString()).toContain(HEX);
    expect(sReply.data.toString()).toContain(`cwd ${dir.path} GET`);
  });
});
