// `npm run release`: the release files, in dist/release/ (or the directory
// given with --out): for x64 and arm64 a tarball (the executable, the man
// page, README, LICENSE) and a Debian package, and SHA256SUMS over them.
// arm64 is cross-compiled: bun fetches its runtime from the npm registry.
// Tools: GNU tar, gzip and dpkg-deb (Debian's own, so the .deb is what
// dpkg-deb makes and lintian checks, not a hand-written ar archive).
import { chmodSync, cpSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { buildCommit, compile, ROOT } from "./build.ts";

type Arch = { name: "x64" | "arm64"; target: string; deb: "amd64" | "arm64" };
export const ARCHES: readonly Arch[] = [
  { name: "x64", target: "bun-linux-x64", deb: "amd64" },
  { name: "arm64", target: "bun-linux-arm64", deb: "arm64" },
];

const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
export const VERSION = pkg.version;
/** Debian revision 1 of the upstream version: above Debian's own socket 1.1-10.x, so it upgrades that package. */
export const DEB_VERSION = `${VERSION}-1`;
const MAINTAINER = process.env.DEB_MAINTAINER ?? "socket authors <socket-authors@users.noreply.github.com>";

async function run(command: string[], env: Record<string, string> = {}): Promise<void> {
  const status = await Bun.spawn(command, { cwd: ROOT, env: { ...process.env, ...env }, stdout: "inherit", stderr: "inherit" }).exited;
  if (status !== 0) throw new Error(`${command.join(" ")}: exit ${status}`);
}

/** The commit's time (RFC 2822), so the changelog and file times do not change between builds of one commit. */
function commitTime(): { rfc2822: string; epoch: number } {
  const r = Bun.spawnSync(["git", "log", "-1", "--format=%ct"], { cwd: ROOT, stdout: "pipe", stderr: "ignore" });
  const epoch = r.exitCode === 0 ? Number(r.stdout.toString().trim()) : Math.floor(Date.now() / 1000);
  return { rfc2822: new Date(epoch * 1000).toUTCString().replace("GMT", "+0000"), epoch };
}

function fill(template: string, values: Record<string, string>): string {
  return template.replace(/@([A-Z_]+)@/g, (whole, key: string) => values[key] ?? whole);
}

/** The README's systemd units (the indented blocks under "# /etc/systemd/system/NAME"), for the package's examples. */
export function readmeUnits(readme: string): Map<string, string> {
  const units = new Map<string, string>();
  const lines = readme.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const m = lines[i].match(/^ {4}# \/etc\/systemd\/system\/(\S+)$/);
    if (!m) continue;
    const body: string[] = [];
    for (let j = i + 1; j < lines.length && (lines[j].startsWith("    ") || lines[j] === "") && !/^ {4}# \//.test(lines[j]); j++) {
      body.push(lines[j].slice(4));
    }
    while (body.at(-1) === "") body.pop();
    units.set(m[1], `${body.join("\n").replaceAll("/usr/local/bin/socket", "/usr/bin/socket")}\n`);
  }
  return units;
}

/** gzip -9n: level 9, and zlib's header carries neither a name nor a time. */
function gzipTo(text: string, path: string): void {
  writeFileSync(path, Bun.gzipSync(text, { level: 9 }));
}

function kib(dir: string): number {
  let bytes = 0;
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) bytes += statSync(join(entry.parentPath, entry.name)).size;
  }
  return Math.ceil(bytes / 1024);
}

async function tarball(out: string, work: string, arch: Arch, executable: string, epoch: number): Promise<string> {
  const name = `socket-${VERSION}-linux-${arch.name}`;
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  cpSync(executable, join(dir, "socket"));
  chmodSync(join(dir, "socket"), 0o755);
  for (const [from, to] of [["docs/socket.1", "socket.1"], ["README.md", "README.md"], ["LICENSE", "LICENSE"]]) {
    cpSync(join(ROOT, from), join(dir, to));
    chmodSync(join(dir, to), 0o644);
  }
  const file = `${name}.tar.gz`;
  await run(["tar", "--sort=name", `--mtime=@${epoch}`, "--owner=0", "--group=0", "--numeric-owner", "-czf", join(out, file), "-C", work, name]);
  return file;
}

async function debian(out: string, work: string, arch: Arch, executable: string, commit: string, date: string, epoch: number): Promise<string> {
  const root = join(work, `deb-${arch.deb}`);
  const doc = join(root, "usr/share/doc/socket");
  for (const d of ["DEBIAN", "usr/bin", "usr/share/man/man1", "usr/share/lintian/overrides", "usr/share/doc/socket/examples"]) {
    mkdirSync(join(root, d), { recursive: true });
  }
  cpSync(executable, join(root, "usr/bin/socket"));
  chmodSync(join(root, "usr/bin/socket"), 0o755);
  gzipTo(readFileSync(join(ROOT, "docs/socket.1"), "utf8"), join(root, "usr/share/man/man1/socket.1.gz"));
  const template = (name: string) => readFileSync(join(ROOT, "docs/debian", name), "utf8");
  const mit = readFileSync(join(ROOT, "LICENSE"), "utf8").split("\n").slice(2).join("\n").trim()
    .split("\n").map((line) => (line === "" ? " ." : ` ${line}`)).join("\n");
  const values = { VERSION, DEB_VERSION, COMMIT: commit, MAINTAINER, DATE: date, ARCH: arch.deb, MIT: mit };
  writeFileSync(join(doc, "copyright"), fill(template("copyright"), values));
  gzipTo(fill(template("changelog"), values), join(doc, "changelog.Debian.gz"));
  for (const [name, text] of readmeUnits(readFileSync(join(ROOT, "README.md"), "utf8"))) {
    writeFileSync(join(doc, "examples", name), text);
  }
  writeFileSync(join(root, "usr/share/lintian/overrides/socket"), template("lintian-overrides"));
  writeFileSync(join(root, "DEBIAN/control"), fill(template("control"), { ...values, SIZE: String(kib(root)) }));
  const file = `socket_${DEB_VERSION}_${arch.deb}.deb`;
  // gzip, not dpkg-deb's default xz: xz took 2 minutes per 100 MB executable here, gzip 6 s, for 52 MB against 40.
  // SOURCE_DATE_EPOCH: the members' times are the commit's, not the build's.
  await run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, join(out, file)], { SOURCE_DATE_EPOCH: String(epoch) });
  return file;
}

/** Writes every release file into `out`; returns their names. */
export async function release(out: string, arches: readonly Arch[] = ARCHES): Promise<string[]> {
  const commit = buildCommit();
  const { rfc2822, epoch } = commitTime();
  mkdirSync(out, { recursive: true });
  const work = join(out, ".work");
  rmSync(work, { recursive: true, force: true });
  try {
    // Each architecture's compile, gzip and dpkg-deb is one process at a time: side by side, the two take one core each.
    const made = await Promise.all(arches.map(async (arch) => {
      const executable = join(work, `socket-${arch.name}`);
      await compile(executable, arch.target, commit);
      return Promise.all([tarball(out, work, arch, executable, epoch), debian(out, work, arch, executable, commit, rfc2822, epoch)]);
    }));
    const files = made.flat();
    const sums = files.map((f) => `${new Bun.CryptoHasher("sha256").update(readFileSync(join(out, f))).digest("hex")}  ${f}\n`);
    writeFileSync(join(out, "SHA256SUMS"), sums.join(""));
    return [...files, "SHA256SUMS"];
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const at = process.argv.indexOf("--out");
  const out = resolve(at > 0 ? process.argv[at + 1] : join(ROOT, "dist/release"));
  for (const file of await release(out)) console.log(join(out, file));
}
