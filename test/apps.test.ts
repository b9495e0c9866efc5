// Real applications nobody here wrote, behind one --cgi-root socket and one
// nginx upstream, each chosen by SCRIPT_FILENAME as fcgiwrap's users
// configure them: cgit, git-http-backend (git clone, and a 5 MB git push
// whose pack comes after git-http-backend has written its header), a shell
// CGI; and php-cgi. Debian's packages, from scripts/install-test-deps.sh.
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, realpathSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startServer, tempDir, writeExecutable } from "./harness.ts";
import { freePort, noNginx, startNginx } from "./gateway-peers.ts";

const CGIT = "/usr/lib/cgit/cgit.cgi";
const HTTP_BACKEND = "/usr/lib/git-core/git-http-backend";
const GIT = Bun.which("git");
const PHP_CGI = Bun.which("php-cgi");
const noGit = noNginx || GIT === null || !existsSync(HTTP_BACKEND);
const noCgit = noGit || !existsSync(CGIT);
if (noCgit) console.warn("apps.test.ts: nginx, git or cgit is not installed (scripts/install-test-deps.sh installs them); their tests are skipped");
if (PHP_CGI === null) console.warn("apps.test.ts: php-cgi is not installed (scripts/install-test-deps.sh installs it); its test is skipped");

const script = (path: string, text: string): string => writeExecutable(path, text);

function git(cwd: string, ...args: string[]): string {
  const result = Bun.spawnSync([GIT!, ...args], {
    cwd,
    env: { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@e", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@e", GIT_TERMINAL_PROMPT: "0" },
  });
  if (result.exitCode !== 0) throw new Error(`git ${args.join(" ")}: ${result.stderr.toString()}`);
  return result.stdout.toString();
}

/** A site whose programs live outside it, each run through a two-line script inside (as the man page says). */
function makeSite(base: string): { root: string; repos: string } {
  const root = join(base, "site");
  const repos = join(base, "repos");
  mkdirSync(root);
  mkdirSync(repos);
  // A bare repository with one commit, open to anonymous push.
  const work = join(base, "work");
  mkdirSync(work);
  git(work, "init", "-q", "-b", "main");
  writeFileSync(join(work, "README"), "hello from the test repository\n");
  // A file name that is not UTF-8: caf\xe9.txt (Latin-1), as fcgiwrap serves it.
  writeFileSync(Buffer.concat([Buffer.from(`${work}/`), Buffer.from("caf\xe9.txt", "latin1")]), "latin-1 name\n");
  git(work, "add", "-A");
  git(work, "commit", "-q", "-m", "the first commit");
  git(base, "clone", "-q", "--bare", work, join(repos, "test.git"));
  git(join(repos, "test.git"), "config", "http.receivepack", "true");
  writeFileSync(join(base, "cgitrc"), `virtual-root=/cgit/\ncache-size=0\nrepo.url=test\nrepo.path=${repos}/test.git\n`);
  script(join(root, "cgit.cgi"), `#!/bin/sh\nexport CGIT_CONFIG=${base}/cgitrc\nexec ${CGIT}\n`);
  script(join(root, "git.cgi"), `#!/bin/sh\nexport GIT_PROJECT_ROOT=${repos} GIT_HTTP_EXPORT_ALL=1\nexec ${HTTP_BACKEND}\n`);
  script(join(root, "hello.cgi"), `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho "hello from $(pwd)"\n`);
  return { root, repos };
}

describe.each([
  { name: "FastCGI", flag: "--fastcgi", protocol: "fastcgi" as const, param: "fastcgi_param" },
  { name: "SCGI", flag: "--scgi", protocol: "scgi" as const, param: "scgi_param" },
])("$name: one --cgi-root socket behind one nginx upstream", ({ flag, protocol, param }) => {
  test.skipIf(noCgit)("serves cgit, git-http-backend (clone, and a 5 MB push) and a shell CGI, each by SCRIPT_FILENAME", async () => {
    using dir = tempDir();
    const base = realpathSync(dir.path);
    const site = makeSite(base);
    await using server = await startServer([flag, "-W", "4", "--cgi-root", site.root, "-s", "0"]);
    const port = freePort();
    await using nginx = await startNginx(base, protocol, server.target, {
      maxBody: "64m",
      tcpPort: port,
      locations: (pass) => `
        location ~ ^(/cgit)(/.*)?$ { ${pass} ${param} SCRIPT_FILENAME ${site.root}/cgit.cgi; ${param} PATH_INFO $2; ${param} SCRIPT_NAME $1; }
        location ~ ^/git(/.*)$ { ${pass} ${param} SCRIPT_FILENAME ${site.root}/git.cgi; ${param} PATH_INFO $1; }
        location = /hello { ${pass} ${param} SCRIPT_FILENAME ${site.root}/hello.cgi; }`,
    });
    // The shell CGI, from its own directory.
    expect(await (await nginx.fetch("/hello")).text()).toBe(`hello from ${site.root}\n`);
    // cgit: the index and the repository's summary with its commit.
    const index = await nginx.fetch("/cgit/");
    expect(index.status).toBe(200);
    expect(await index.text()).toContain("/cgit/test/");
    const summary = await (await nginx.fetch("/cgit/test/")).text();
    expect(summary).toContain("the first commit");
    const readme = await (await nginx.fetch("/cgit/test/plain/README")).text();
    expect(readme).toBe("hello from the test repository\n");
    // nginx decodes %E9 to the byte 0xE9 in PATH_INFO; cgit must get that byte, not U+FFFD.
    const latin = await nginx.fetch("/cgit/test/plain/caf%E9.txt");
    expect(`${latin.status} ${await latin.text()}`).toBe("200 latin-1 name\n");
    // git over smart HTTP: clone, then push a commit with 5 MB of random data (the pack follows git-http-backend's header).
    const url = `http://127.0.0.1:${port}/git/test.git`;
    git(base, "clone", "-q", url, "clone");
    const clone = join(base, "clone");
    expect(Bun.file(join(clone, "README")).size).toBeGreaterThan(0);
    const big = new Uint8Array(5 << 20);
    for (let i = 0; i < big.length; i += 65536) big.set(crypto.getRandomValues(new Uint8Array(65536)), i);
    writeFileSync(join(clone, "big.bin"), big);
    git(clone, "add", "big.bin");
    git(clone, "commit", "-q", "-m", "five megabytes");
    git(clone, "push", "-q", "origin", "main");
    expect(git(join(site.repos, "test.git"), "log", "--format=%s", "main")).toBe("five megabytes\nthe first commit\n");
    expect(git(join(site.repos, "test.git"), "cat-file", "-s", "main:big.bin")).toBe(`${big.length}\n`);
  }, 60000);
});

describe("php-cgi", () => {
  test.skipIf(noNginx || PHP_CGI === null)("an executable PHP script under --cgi-root, through nginx's FastCGI: GET and a POST body", async () => {
    using dir = tempDir();
    const base = realpathSync(dir.path);
    const root = join(base, "site");
    mkdirSync(root);
    // As fcgiwrap runs PHP: the script is the program (its #! line names php-cgi, which skips it).
    script(join(root, "info.php"), `#!${PHP_CGI}\n<?php header("X-Test: yes"); echo "php ", $_SERVER["REQUEST_METHOD"], " ", getcwd(), " [", file_get_contents("php://input"), "] ", $_GET["q"] ?? "", "\\n";\n`);
    await using server = await startServer(["--fastcgi", "-W", "2", "--cgi-root", root, "-s", "0"]);
    await using nginx = await startNginx(base, "fastcgi", server.target, {
      locations: (pass) => `location ~ \\.php$ { root ${root}; ${pass} fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; }`,
    });
    const get = await nginx.fetch("/info.php?q=42");
    expect(get.status).toBe(200);
    expect(get.headers.get("x-test")).toBe("yes");
    expect(await get.text()).toBe(`php GET ${root} [] 42\n`);
    const post = await nginx.fetch("/info.php", { method: "POST", body: "a body", headers: { "content-type": "text/plain" } });
    expect(await post.text()).toBe(`php POST ${root} [a body] \n`);
  });
});
