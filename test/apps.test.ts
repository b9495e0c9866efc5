// Real applications nobody here wrote, behind one --cgi-root socket and one
// nginx upstream, each chosen by SCRIPT_FILENAME as fcgiwrap's users
// configure them: cgit, git-http-backend (git clone, and a 5 MB git push
// whose pack comes after git-http-backend has written its header), a shell
// CGI; gitweb and a Perl CGI.pm form, each also compared response by
// response with fcgiwrap; and php-cgi. Debian's packages, from
// scripts/install-test-deps.sh.
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, realpathSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startServer, tempDir, waitFor, writeExecutable } from "./harness.ts";
import { freePort, noNginx, startNginx } from "./gateway-peers.ts";

const CGIT = "/usr/lib/cgit/cgit.cgi";
const HTTP_BACKEND = "/usr/lib/git-core/git-http-backend";
const GIT = Bun.which("git");
const PHP_CGI = Bun.which("php-cgi");
const noGit = noNginx || GIT === null || !existsSync(HTTP_BACKEND);
const noCgit = noGit || !existsSync(CGIT);
if (noCgit) console.warn("apps.test.ts: nginx, git or cgit is not installed (scripts/install-test-deps.sh installs them); their tests are skipped");
const GITWEB = "/usr/share/gitweb/gitweb.cgi";
const PERL = Bun.which("perl");
// gitweb and the form are CGI.pm programs; the form also hashes with Digest::SHA (Perl's core).
const noCgiPm = PERL === null || Bun.spawnSync([PERL, "-MCGI", "-MDigest::SHA", "-e", "1"]).exitCode !== 0;
const FCGIWRAP = Bun.which("fcgiwrap", { PATH: `${process.env.PATH}:/usr/sbin:/sbin` });
const noGitweb = noGit || noCgiPm || !existsSync(GITWEB);
const noForm = noNginx || noCgiPm;
const noFcgiwrap = noGitweb || FCGIWRAP === null;
if (noCgiPm) console.warn("apps.test.ts: perl with CGI.pm is not installed (scripts/install-test-deps.sh installs libcgi-pm-perl); the gitweb and form tests are skipped");
else if (noGitweb) console.warn("apps.test.ts: nginx, git or gitweb is not installed (scripts/install-test-deps.sh installs them); the gitweb tests are skipped");
if (!noGitweb && FCGIWRAP === null) console.warn("apps.test.ts: fcgiwrap is not installed (scripts/install-test-deps.sh installs it); the comparison with it is skipped");
if (PHP_CGI === null) console.warn("apps.test.ts: php-cgi is not installed (scripts/install-test-deps.sh installs it); its test is skipped");

const script = (path: string, text: string): string => writeExecutable(path, text);

/** The two protocols, with nginx's directive for a parameter. */
const GATEWAYS = [
  { name: "FastCGI", flag: "--fastcgi", protocol: "fastcgi" as const, param: "fastcgi_param" },
  { name: "SCGI", flag: "--scgi", protocol: "scgi" as const, param: "scgi_param" },
];

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

/** gitweb over the site's repositories, run through a two-line script in the root as Debian's users run it. */
function addGitweb(base: string, site: { root: string; repos: string }): void {
  writeFileSync(join(base, "gitweb.conf"), `our $projectroot = "${site.repos}";\nour $GIT = "${GIT}";\n`);
  script(join(site.root, "gitweb.cgi"), `#!/bin/sh\nGITWEB_CONFIG=${base}/gitweb.conf exec ${GITWEB}\n`);
}

/** A CGI.pm form: a text field and an upload, answered with the upload's name, length and sha256. */
function addForm(root: string): void {
  script(
    join(root, "form.cgi"),
    `#!${PERL}
use strict; use warnings; use CGI; use Digest::SHA qw(sha256_hex);
my $q = CGI->new;
my $fh = $q->upload("file");
my $data = "";
if ($fh) { binmode $fh; local $/; $data = <$fh>; }
print $q->header(-type => "text/plain");
print "name=", $q->param("name") // "", "\\nfile=", $q->param("file") // "", "\\nlength=", length($data), "\\nsha256=", sha256_hex($data), "\\n";
`,
  );
}

/** nginx's locations for gitweb and the form, chosen by SCRIPT_FILENAME (SCRIPT_NAME too: nginx's scgi_params has none, and gitweb's links need it). */
const perlLocations = (root: string, param: string) => (pass: string) => `
        location = /gitweb.cgi { ${pass} ${param} SCRIPT_FILENAME ${root}/gitweb.cgi; ${param} SCRIPT_NAME /gitweb.cgi; }
        location = /form { ${pass} ${param} SCRIPT_FILENAME ${root}/form.cgi; }`;

const GITWEB_PAGES = ["/gitweb.cgi", "/gitweb.cgi?p=test.git;a=summary", "/gitweb.cgi?p=test.git;a=blob_plain;f=README;hb=HEAD"];

/** A few hundred KB of random bytes for the upload. */
function uploadBytes(): Uint8Array {
  const bytes = new Uint8Array(300 * 1024 + 17);
  for (let i = 0; i < bytes.length; i += 65536) bytes.set(crypto.getRandomValues(new Uint8Array(Math.min(65536, bytes.length - i))), i);
  return bytes;
}

/** The form's two POSTs: multipart/form-data with an upload, and urlencoded (a UTF-8 name, bytes through CGI.pm). */
function formRequests(upload: Uint8Array): { what: string; init: () => RequestInit }[] {
  return [
    {
      what: "multipart",
      init: () => {
        const form = new FormData();
        form.append("name", "Zoë & co");
        form.append("file", new Blob([upload]), "upload.bin");
        return { method: "POST", body: form };
      },
    },
    {
      what: "urlencoded",
      init: () => ({ method: "POST", body: "name=Zo%C3%AB+%26+co&other=1", headers: { "content-type": "application/x-www-form-urlencoded" } }),
    },
  ];
}

describe.each(GATEWAYS)("$name: one --cgi-root socket behind one nginx upstream", ({ flag, protocol, param }) => {
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

describe.each(GATEWAYS)("$name: gitweb and a CGI.pm form behind the --cgi-root socket", ({ flag, protocol, param }) => {
  test.skipIf(noGitweb)("gitweb, chosen by SCRIPT_FILENAME: the project list, a summary naming the commit, a README's blob_plain", async () => {
    using dir = tempDir();
    const base = realpathSync(dir.path);
    const site = makeSite(base);
    addGitweb(base, site);
    await using server = await startServer([flag, "-W", "2", "--cgi-root", site.root, "-s", "0"]);
    await using nginx = await startNginx(base, protocol, server.target, { locations: perlLocations(site.root, param) });
    const list = await nginx.fetch("/gitweb.cgi");
    expect(list.status).toBe(200);
    expect(await list.text()).toContain("/gitweb.cgi?p=test.git;a=summary");
    const commit = git(join(site.repos, "test.git"), "rev-parse", "main").trim();
    const summary = await nginx.fetch("/gitweb.cgi?p=test.git;a=summary");
    expect(summary.status).toBe(200);
    const page = await summary.text();
    expect(page).toContain("the first commit");
    expect(page).toContain(commit);
    const readme = await nginx.fetch("/gitweb.cgi?p=test.git;a=blob_plain;f=README;hb=HEAD");
    expect(readme.status).toBe(200);
    expect(readme.headers.get("content-type")).toStartWith("text/plain");
    expect(await readme.text()).toBe("hello from the test repository\n");
  }, 20000);

  test.skipIf(noForm)("a CGI.pm form: a multipart POST with a few hundred KB upload, and a urlencoded POST", async () => {
    using dir = tempDir();
    const base = realpathSync(dir.path);
    const root = join(base, "site");
    mkdirSync(root);
    addForm(root);
    await using server = await startServer([flag, "-W", "2", "--cgi-root", root, "-s", "0"]);
    await using nginx = await startNginx(base, protocol, server.target, { locations: perlLocations(root, param) });
    const upload = uploadBytes();
    const sha = new Bun.CryptoHasher("sha256").update(upload).digest("hex");
    const [multipart, urlencoded] = formRequests(upload);
    const sent = await nginx.fetch("/form", multipart.init());
    expect(`${sent.status} ${await sent.text()}`).toBe(`200 name=Zoë & co\nfile=upload.bin\nlength=${upload.length}\nsha256=${sha}\n`);
    const plain = await nginx.fetch("/form", urlencoded.init());
    expect(`${plain.status} ${await plain.text()}`).toBe(`200 name=Zoë & co\nfile=\nlength=0\nsha256=${new Bun.CryptoHasher("sha256").update("").digest("hex")}\n`);
  }, 20000);
});

/** Debian's fcgiwrap on a UNIX socket, in its own process group: disposing it ends it and any CGI it still runs. */
async function startFcgiwrap(path: string): Promise<AsyncDisposable> {
  const proc = Bun.spawn([FCGIWRAP!, "-c", "2", "-s", `unix:${path}`], { stdio: ["ignore", "ignore", "inherit"], detached: true });
  const stop = async () => {
    try {
      process.kill(-proc.pid, "SIGKILL");
    } catch {
      // already gone
    }
    await proc.exited;
  };
  try {
    await waitFor("fcgiwrap to listen", () => {
      if (proc.exitCode !== null) throw new Error(`fcgiwrap exited ${proc.exitCode}`);
      return existsSync(path);
    });
  } catch (e) {
    await stop();
    throw e;
  }
  return { [Symbol.asyncDispose]: stop };
}

/**
 * What may differ between two runs of the same gitweb page: the project
 * list's and the summary's ages, counted from now (" right now", then "3 sec
 * ago"), which move on between the two requests. Only those are replaced;
 * the rest, gitweb's generator line too (it names only gitweb's and git's
 * versions, the same for both), is compared byte for byte. Latin-1 maps each
 * byte to one character, so equal strings are equal bytes.
 */
const withoutAge = (page: Buffer): string => page.toString("latin1").replace(/>(\d+ (sec|min|hours|days|weeks|months|years) ago| right now)</g, ">AGE<");

describe("fcgiwrap and socket, response by response", () => {
  test.skipIf(noFcgiwrap)("gitweb's pages and the CGI.pm form: the same status, headers and bytes through the same nginx configuration", async () => {
    using dir = tempDir();
    const base = realpathSync(dir.path);
    const site = makeSite(base);
    addGitweb(base, site);
    addForm(site.root);
    await using server = await startServer(["--fastcgi", "-W", "2", "--cgi-root", site.root, "-s", "0"]);
    const wrapSocket = join(base, "fcgiwrap.sock");
    await using _fcgiwrap = await startFcgiwrap(wrapSocket);
    const locations = perlLocations(site.root, "fastcgi_param");
    mkdirSync(join(base, "a"));
    mkdirSync(join(base, "b"));
    await using ours = await startNginx(join(base, "a"), "fastcgi", server.target, { locations });
    await using theirs = await startNginx(join(base, "b"), "fastcgi", wrapSocket, { locations });
    const answer = async (nginx: typeof ours, path: string, init?: RequestInit) => {
      const r = await nginx.fetch(path, init);
      // Every header but nginx's Date, which is the clock's.
      const headers = [...r.headers].filter(([name]) => name !== "date").map(([name, value]) => `${name}: ${value}`);
      return { status: r.status, headers, body: Buffer.from(await r.arrayBuffer()) };
    };
    for (const path of GITWEB_PAGES) {
      const [a, b] = [await answer(ours, path), await answer(theirs, path)];
      expect(a.status).toBe(200);
      // The list and the summary show the repository's age: what withoutAge replaces must be there.
      if (!path.includes("blob_plain")) expect(withoutAge(a.body)).toContain(">AGE<");
      expect({ path, status: a.status, headers: a.headers, body: withoutAge(a.body) }).toEqual({ path, status: b.status, headers: b.headers, body: withoutAge(b.body) });
    }
    const upload = uploadBytes();
    for (const { what, init } of formRequests(upload)) {
      const [a, b] = [await answer(ours, "/form", init()), await answer(theirs, "/form", init())];
      expect(a.status).toBe(200);
      expect(a.body.toString()).toContain("length=");
      expect({ what, status: a.status, headers: a.headers, body: a.body.toString("latin1") }).toEqual({ what, status: b.status, headers: b.headers, body: b.body.toString("latin1") });
    }
  }, 30000);
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
