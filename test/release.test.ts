// The release, verified rather than just built: `bun
// scripts/release.ts` runs once into a temp dir (two compiles, ~40 s here;
// SOCKET_RELEASE_DIR=dist/release reuses a release already made), then the
// x64 tarball's executable runs, the arm64 one runs under qemu-aarch64 (a
// classic -slf -p cat server answers from the host), each .deb is unpacked
// into a scratch root (dpkg -x) whose usr/bin/socket runs and whose man page
// renders, and lintian reports no error. A pool under qemu-user is not tried:
// its workers are the executable run again, which needs binfmt_misc to
// reach qemu, and these machines have none.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exchange, run, startServer } from "./harness.ts";

const ROOT = join(import.meta.dir, "..");
const VERSION: string = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version;
const DEB_VERSION = `${VERSION}-1`;
const QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"];

const works = (argv: string[]) => {
  try {
    return Bun.spawnSync(argv, { stdio: ["ignore", "ignore", "ignore"] }).exitCode === 0;
  } catch {
    return false;
  }
};
const hasTools = works(["dpkg-deb", "--version"]) && works(["tar", "--version"]);
const hasQemu = works(["qemu-aarch64", "-version"]) && existsSync("/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1");
const hasLintian = works(["lintian", "--version"]);
const hasMan = works(["man", "--version"]);
if (!hasTools) console.warn("release.test: dpkg-deb or tar missing: skipped");
if (!hasQemu) console.warn("release.test: qemu-aarch64 or libc6-arm64-cross missing (scripts/install-test-deps.sh): the arm64 tests skip");
if (!hasLintian) console.warn("release.test: lintian missing (scripts/install-test-deps.sh): its test skips");

const scratch = mkdtempSync(join(tmpdir(), "socket-release-"));
const made = process.env.SOCKET_RELEASE_DIR;
const out = made ?? join(scratch, "release");

function sh(argv: string[], cwd = scratch): string {
  const r = Bun.spawnSync(argv, { cwd, stdout: "pipe", stderr: "pipe", timeout: 60_000 });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: exit ${r.exitCode}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/**
 * The commit the executables must name: HEAD's, "-dirty" when tracked files
 * differ (as scripts/build.ts stamps it). Read once, when the file loads, as
 * the release is built: a commit made meanwhile must not change it.
 */
const head = Bun.spawnSync(["git", "rev-parse", "--short", "HEAD"], { cwd: ROOT, stdout: "pipe" }).stdout.toString().trim();
function expectedCommit(): RegExp {
  return new RegExp(`^socket version ${VERSION.replaceAll(".", "\\.")} \\(commit ${head || "unknown"}(-dirty)?\\)\\n$`);
}

beforeAll(async () => {
  if (!hasTools || made) return;
  const release = Bun.spawn([process.execPath, "scripts/release.ts", "--out", out], { cwd: ROOT, stdout: "pipe", stderr: "pipe", timeout: 280_000 });
  const [status, err] = await Promise.all([release.exited, new Response(release.stderr).text()]);
  if (status !== 0) throw new Error(`release failed (${status}): ${err.slice(-2000)}`);
}, 300_000);

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const tarballs = ["x64", "arm64"].map((arch) => `socket-${VERSION}-linux-${arch}.tar.gz`);
const debs = ["amd64", "arm64"].map((arch) => `socket_${DEB_VERSION}_${arch}.deb`);

/** The tarball unpacked into the scratch dir; its top directory. */
function unpack(tarball: string): string {
  sh(["tar", "-xzf", join(out, tarball), "-C", scratch]);
  return join(scratch, tarball.replace(/\.tar\.gz$/, ""));
}

/** The .deb unpacked into a scratch root, as dpkg would install it. */
function install(deb: string): string {
  const root = join(scratch, `root-${deb}`);
  sh(["dpkg", "-x", join(out, deb), root]);
  return root;
}

describe.skipIf(!hasTools)("release", () => {
  test("both tarballs, both .debs, and SHA256SUMS with the right hash of each", () => {
    const sums = readFileSync(join(out, "SHA256SUMS"), "utf8").trim().split("\n");
    expect(sums.map((line) => line.split(/\s+/)[1]).sort()).toEqual([...tarballs, ...debs].sort());
    for (const line of sums) {
      const [hash, name] = line.split(/\s+/);
      expect(new Bun.CryptoHasher("sha256").update(readFileSync(join(out, name))).digest("hex")).toBe(hash);
    }
  });

  test("each tarball holds the executable, the man page, README and LICENSE; x64's runs and names its version and commit", async () => {
    for (const tarball of tarballs) {
      const top = tarball.replace(/\.tar\.gz$/, "");
      expect(sh(["tar", "-tzf", join(out, tarball)]).trim().split("\n").sort()).toEqual(
        [`${top}/`, `${top}/LICENSE`, `${top}/README.md`, `${top}/socket`, `${top}/socket.1`].sort(),
      );
    }
    const dir = unpack(tarballs[0]);
    const r = await run(["-version"], { executable: join(dir, "socket") });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(expectedCommit());
    expect(readFileSync(join(dir, "LICENSE"), "utf8")).toContain("MIT License");
  });

  test.skipIf(!hasQemu)("the arm64 executable runs under qemu-aarch64: -version, and a -slf -p cat server answers from the host", async () => {
    const exe = join(unpack(tarballs[1]), "socket");
    expect(sh(["file", "-b", exe])).toContain("ARM aarch64");
    const r = await run(["-version"], { executable: exe, wrap: QEMU, ms: 30_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(expectedCommit());
    await using server = await startServer(["-slf", "-p", "cat", "0"], { executable: exe, wrap: QEMU, startMs: 30_000 });
    const reply = await exchange(server.target, "hello from x64\n", { ms: 15_000 });
    expect(reply.data.toString()).toBe("hello from x64\n");
  }, 60_000);

  test("each .deb: its control says it supersedes socket 1.1, and a scratch install runs and renders its man page", async () => {
    for (const [deb, arch] of [[debs[0], "amd64"], [debs[1], "arm64"]]) {
      const field = (name: string) => sh(["dpkg-deb", "-f", join(out, deb), name]).trim();
      expect(field("Package")).toBe("socket");
      expect(field("Architecture")).toBe(arch);
      expect(field("Version")).toBe(DEB_VERSION);
      // Debian's own socket was 1.1-10.x: a higher version of the same name upgrades it.
      expect(works(["dpkg", "--compare-versions", DEB_VERSION, "gt", "1.1-10.1"])).toBe(true);
      expect(field("Description")).toContain("supersedes Debian's socket 1.1");
      expect(sh(["dpkg-deb", "--ctrl-tarfile", join(out, deb)]).length).toBeGreaterThan(0);
      const root = install(deb);
      for (const file of [
        "usr/bin/socket", "usr/share/man/man1/socket.1.gz", "usr/share/doc/socket/copyright", "usr/share/doc/socket/changelog.Debian.gz",
        "usr/share/doc/socket/examples/echo.socket", "usr/share/doc/socket/examples/echo.service", "usr/share/lintian/overrides/socket",
      ]) {
        expect(existsSync(join(root, file))).toBe(true);
      }
      expect(readFileSync(join(root, "usr/share/doc/socket/copyright"), "utf8")).toStartWith(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n",
      );
      expect(new TextDecoder().decode(Bun.gunzipSync(readFileSync(join(root, "usr/share/doc/socket/changelog.Debian.gz"))))).toStartWith(`socket (${DEB_VERSION}) `);
      expect(readFileSync(join(root, "usr/share/doc/socket/examples/echo.service"), "utf8")).toContain("ExecStart=/usr/bin/socket ");
      if (arch === "amd64") {
        const r = await run(["-version"], { executable: join(root, "usr/bin/socket") });
        expect(r.status).toBe(0);
        expect(r.stdout).toMatch(expectedCommit());
        if (hasMan) {
          const page = Bun.spawnSync(["man", "-l", join(root, "usr/share/man/man1/socket.1.gz")], {
            stdout: "pipe", stderr: "pipe", env: { ...process.env, MANPAGER: "cat", MANWIDTH: "80" }, timeout: 30_000,
          });
          expect(page.exitCode).toBe(0);
          expect(page.stdout.toString()).toContain("THE PREFORK POOL");
        }
      }
    }
  }, 60_000);

  test.skipIf(!hasLintian)("lintian reports no error on either .deb", async () => {
    // Both at once: lintian spends most of its time starting, on one core.
    const checks = debs.map(async (deb) => {
      const r = Bun.spawn(["lintian", "--no-cfg", join(out, deb)], { stdout: "pipe", stderr: "pipe", timeout: 120_000 });
      const [text, status] = await Promise.all([new Response(r.stdout).text(), r.exited]);
      return { deb, errors: text.split("\n").filter((line) => line.startsWith("E:")), status };
    });
    for (const { deb, errors, status } of await Promise.all(checks)) expect({ deb, errors, status }).toEqual({ deb, errors: [], status: 0 });
  }, 200_000);
});
