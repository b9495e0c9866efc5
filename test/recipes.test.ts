// The recipes of docs/RECIPES.md, and the README's cgit recipe, run as they
// are written: each block is read out of the document by its marker
// (<!-- recipe: NAME -->), only the placeholders the document names are
// replaced (socket's ports, nginx's `listen 80`, paths under /srv/), and
// then socket's line, nginx's server block and Apache's directives run
// unchanged in front of Debian's cgit, gitweb and git-http-backend, with a
// real client: the pages, and git clone and push over smart HTTP. Each
// line run without its --pass-env shows what an fcgiwrap user meets: the
// application fails, and socket says which variable it dropped.
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { launch, tempDir, waitFor, type Running } from "./harness.ts";
import { freePort, noApache, noNginx, startApache, startNginx } from "./gateway-peers.ts";

const ROOT = join(import.meta.dir, "..");
const RECIPES = readFileSync(join(ROOT, "docs", "RECIPES.md"), "utf8");
const README = readFileSync(join(ROOT, "README.md"), "utf8");

const GIT = Bun.which("git");
const PERL = Bun.which("perl");
const noGit = GIT === null || !existsSync("/usr/lib/git-core/git-http-backend");
const noCgit = noGit || !existsSync("/usr/lib/cgit/cgit.cgi");
const noGitweb = noGit || PERL === null || !existsSync("/usr/share/gitweb/gitweb.cgi") || Bun.spawnSync([PERL, "-MCGI", "-e", "1"]).exitCode !== 0;
if (noNginx) console.warn("recipes.test.ts: nginx is not installed (scripts/install-test-deps.sh installs it); the nginx recipes are skipped");
if (noApache) console.warn("recipes.test.ts: apache2 is not installed (scripts/install-test-deps.sh installs it); the Apache recipes are skipped");
if (noCgit) console.warn("recipes.test.ts: git or cgit is not installed (scripts/install-test-deps.sh installs them); the cgit recipes are skipped");
if (noGitweb) console.warn("recipes.test.ts: git, gitweb or CGI.pm is not installed (scripts/install-test-deps.sh installs them); the gitweb recipes are skipped");
if (noGit) console.warn("recipes.test.ts: git with git-http-backend in /usr/lib/git-core is not installed; the git recipes are skipped");

/** The fenced block after `<!-- recipe: NAME -->` in `doc`, as written. */
function block(doc: string, name: string): string {
  const m = doc.match(new RegExp(`<!-- recipe: ${name.replace(/[.]/g, "\\.")} -->\\n\`\`\`[a-z]*\\n([\\s\\S]*?)\`\`\`\\n`));
  if (!m) throw new Error(`no block marked "recipe: ${name}"`);
  return m[1];
}

/** Where a recipe runs here: its placeholders' values. */
interface Place {
  base: string;
  /** socket's port, for the document's 9000, 9001 or 9002. */
  app: number;
  /** nginx's, for `listen 80`. */
  http: number;
}

/** The document's placeholders replaced, nothing else: /srv/ inside the temp dir, the ports free ones on 127.0.0.1. */
function placed(text: string, place: Place): string {
  return text
    .replaceAll("/srv/", `${place.base}/srv/`)
    .replace(/\b900[0-2]\b/g, String(place.app))
    .replaceAll("listen 80;", `listen 127.0.0.1:${place.http};`);
}

/** socket's line as its words (the recipes quote nothing), without the leading `socket`. */
function socketWords(line: string): string[] {
  const words = line.trim().split(/\s+/);
  expect(words[0]).toBe("socket");
  return words.slice(1);
}

function withoutPassEnv(words: string[]): string[] {
  return words.filter((w, i) => w !== "--pass-env" && words[i - 1] !== "--pass-env");
}

/** socket's line as written (no -v: it says nothing once it listens), ready once its port takes a connection. */
async function startSocket(words: string[], port: number): Promise<Running> {
  const socket = launch(words);
  const connects = () =>
    Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } }).then(
      (s) => (s.end(), true),
      () => false,
    );
  try {
    await waitFor("socket to listen", () => {
      if (socket.proc.exitCode !== null) throw new Error(`socket exited ${socket.proc.exitCode}: ${socket.stderr()}`);
      return connects();
    });
  } catch (e) {
    await socket.kill();
    throw e;
  }
  return socket;
}

const GIT_ENV = { GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@e", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@e", GIT_TERMINAL_PROMPT: "0" };

/** git, bounded: its status and what it said. */
async function git(cwd: string, ...args: string[]): Promise<{ status: number; stderr: string }> {
  const proc = Bun.spawn([GIT!, ...args], { cwd, env: { ...process.env, ...GIT_ENV }, stdio: ["ignore", "ignore", "pipe"], timeout: 30000 });
  const stderr = await new Response(proc.stderr).text();
  return { status: await proc.exited, stderr };
}

async function gitOk(cwd: string, ...args: string[]): Promise<void> {
  const result = await git(cwd, ...args);
  if (result.status !== 0) throw new Error(`git ${args.join(" ")}: ${result.stderr}`);
}

/** /srv/git/repo.git, bare, with one commit, open to anonymous push; and the applications' configuration files as written. */
async function makeSrv(place: Place): Promise<void> {
  const srv = join(place.base, "srv");
  const work = join(place.base, "work");
  mkdirSync(join(srv, "git"), { recursive: true });
  mkdirSync(work);
  await gitOk(work, "init", "-q", "-b", "main");
  writeFileSync(join(work, "README"), "hello from the test repository\n");
  await gitOk(work, "add", "README");
  await gitOk(work, "commit", "-q", "-m", "the first commit");
  await gitOk(place.base, "clone", "-q", "--bare", work, join(srv, "git", "repo.git"));
  await gitOk(join(srv, "git", "repo.git"), "config", "http.receivepack", "true");
  writeFileSync(join(srv, "cgitrc"), placed(block(RECIPES, "cgitrc"), place));
  writeFileSync(join(srv, "gitweb.conf"), placed(block(RECIPES, "gitweb.conf"), place));
}

/** What a client sees through the web server: a page by path, and the URL for git. */
interface Front {
  fetch(path: string): Promise<Response>;
  url: string;
}

interface App {
  name: string;
  skip: boolean;
  /** The variables its line passes. */
  names: string[];
  /** The blocks of socket's line and nginx's server: the README's where it has them. */
  socket: string;
  nginx: string;
  apache: string;
  works(front: Front, place: Place): Promise<void>;
  fails(front: Front, place: Place): Promise<void>;
}

const body = async (r: Response) => `${r.status} ${await r.text()}`;

const APPS: App[] = [
  {
    name: "cgit",
    skip: noCgit,
    names: ["CGIT_CONFIG"],
    socket: block(README, "cgit-socket"),
    nginx: block(README, "cgit-nginx"),
    apache: block(RECIPES, "cgit-apache"),
    works: async (front) => {
      const index = await body(await front.fetch("/cgit/"));
      expect(index).toStartWith("200 ");
      expect(index).toContain("href='/cgit/repo.git/'");
      expect(await body(await front.fetch("/cgit/repo.git/"))).toContain("the first commit");
      expect(await body(await front.fetch("/cgit/repo.git/plain/README"))).toBe("200 hello from the test repository\n");
      expect((await front.fetch("/cgit-css/cgit.css")).status).toBe(200);
    },
    fails: async (front) => expect((await front.fetch("/cgit/repo.git/")).status).toBe(404),
  },
  {
    name: "gitweb",
    skip: noGitweb,
    names: ["GITWEB_CONFIG"],
    socket: block(RECIPES, "gitweb-socket"),
    nginx: block(RECIPES, "gitweb-nginx"),
    apache: block(RECIPES, "gitweb-apache"),
    works: async (front) => {
      const list = await body(await front.fetch("/gitweb/"));
      expect(list).toStartWith("200 ");
      expect(list).toContain("p=repo.git;a=summary");
      expect(list).toContain("/gitweb/static/gitweb.css");
      expect(await body(await front.fetch("/gitweb/?p=repo.git;a=summary"))).toContain("the first commit");
      expect((await front.fetch("/gitweb/static/gitweb.css")).status).toBe(200);
    },
    fails: async (front) => {
      const list = await body(await front.fetch("/gitweb/"));
      expect(list).not.toContain("p=repo.git;a=summary");
      expect(list).toStartWith("404 ");
    },
  },
  {
    name: "git-http-backend",
    skip: noGit,
    names: ["GIT_PROJECT_ROOT", "GIT_HTTP_EXPORT_ALL"],
    socket: block(RECIPES, "git-socket"),
    nginx: block(RECIPES, "git-nginx"),
    apache: block(RECIPES, "git-apache"),
    works: async (front, place) => {
      await gitOk(place.base, "clone", "-q", `${front.url}/git/repo.git`, "clone");
      const clone = join(place.base, "clone");
      expect(readFileSync(join(clone, "README"), "utf8")).toBe("hello from the test repository\n");
      // 2 MB that does not compress: past git's http.postBuffer (1 MB), the pack goes chunked, without Content-Length.
      const pushed = new Uint8Array(2 << 20);
      for (let i = 0; i < pushed.length; i += 65536) pushed.set(crypto.getRandomValues(new Uint8Array(65536)), i);
      writeFileSync(join(clone, "pushed"), pushed);
      await gitOk(clone, "add", "pushed");
      await gitOk(clone, "commit", "-q", "-m", "a pushed commit");
      const push = await git(clone, "push", "-v", "-v", "origin", "main");
      expect({ status: push.status, chunked: push.stderr.includes("POST git-receive-pack (chunked)") }).toEqual({ status: 0, chunked: true });
      const log = Bun.spawnSync([GIT!, "log", "--format=%s", "main"], { cwd: join(place.base, "srv", "git", "repo.git") });
      expect(log.stdout.toString()).toBe("a pushed commit\nthe first commit\n");
      const size = Bun.spawnSync([GIT!, "cat-file", "-s", "main:pushed"], { cwd: join(place.base, "srv", "git", "repo.git") });
      expect(size.stdout.toString()).toBe(`${pushed.length}\n`);
    },
    fails: async (front, place) => {
      const clone = await git(place.base, "clone", "-q", `${front.url}/git/repo.git`, "clone");
      expect(clone.status).not.toBe(0);
      expect(existsSync(join(place.base, "clone", "README"))).toBe(false);
    },
  },
];

/** A temp dir with /srv in it, and free ports for socket and the web server. */
async function newPlace(path: string): Promise<Place> {
  const place = { base: realpathSync(path), app: freePort(), http: freePort() };
  await makeSrv(place);
  return place;
}

const said = (name: string) => `socket: dropped the request variable ${name}, which CGI programs are not given unless named: --pass-env ${name} lets it through`;

describe("the README's and the man page's cgit recipe", () => {
  test("is docs/RECIPES.md's, block for block, and the man page's example is its socket line", () => {
    for (const name of ["cgit-socket", "cgit-nginx"]) expect(block(README, name)).toBe(block(RECIPES, name));
    expect(block(README, "cgit-socket")).toContain("--pass-env CGIT_CONFIG");
    const page = readFileSync(join(ROOT, "docs", "socket.1"), "utf8").replaceAll("\\-", "-");
    expect(page).toContain(`.EX\n${block(RECIPES, "cgit-socket")}.EE\n`);
  });
});

describe.each(APPS)("$name", (app) => {
  test.skipIf(app.skip || noNginx)("behind nginx, socket's line and the server block as written", async () => {
    using dir = tempDir();
    const place = await newPlace(dir.path);
    await using socket = await startSocket(socketWords(placed(app.socket, place)), place.app);
    await using nginx = await startNginx(place.base, "fastcgi", place.app, { servers: placed(app.nginx, place) });
    const front = { fetch: (path: string) => fetch(`http://127.0.0.1:${place.http}${path}`), url: `http://127.0.0.1:${place.http}` };
    await app.works(front, place);
    expect(socket.stderr()).toBe("");
    expect(nginx.errorLog()).not.toContain("[error]");
  }, 60000);

  test.skipIf(app.skip || noNginx)("behind nginx, the same line without its --pass-env: the application fails and socket names what it dropped", async () => {
    using dir = tempDir();
    const place = await newPlace(dir.path);
    const words = withoutPassEnv(socketWords(placed(app.socket, place)));
    expect(words.length).toBe(socketWords(app.socket).length - 2 * app.names.length);
    await using socket = await startSocket(words, place.app);
    await using _nginx = await startNginx(place.base, "fastcgi", place.app, { servers: placed(app.nginx, place) });
    await app.fails({ fetch: (path) => fetch(`http://127.0.0.1:${place.http}${path}`), url: `http://127.0.0.1:${place.http}` }, place);
    const lines = () => new Set(socket.stderr().split("\n").filter(Boolean));
    await waitFor("socket to say what it dropped", () => app.names.every((name) => lines().has(said(name))), 3000);
    // Nothing else: one line per name (each worker says it once at most).
    expect(lines()).toEqual(new Set(app.names.map(said)));
  }, 60000);

  test.skipIf(app.skip || noApache)("behind Apache, socket's line and the directives as written", async () => {
    using dir = tempDir();
    const place = await newPlace(dir.path);
    await using socket = await startSocket(socketWords(placed(app.socket, place)), place.app);
    await using apache = await startApache(place.base, placed(app.apache, place));
    await app.works({ fetch: apache.fetch, url: `http://127.0.0.1:${apache.port}` }, place);
    expect(socket.stderr()).toBe("");
  }, 60000);
});
