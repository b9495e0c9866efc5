// --help fits the terminal: 80 columns, or COLUMNS when smaller, cut at
// blanks, no trailing blanks, in a pipe and in a terminal alike.
import { describe, expect, test } from "bun:test";
import { fitHelp, helpWidth, wrap } from "../src/cli/help.ts";
import { run, SOCKET } from "./harness.ts";

/** The lines wider than `width` or ending in a blank (none is right). */
function misfits(text: string, width: number): string[] {
  return text.split(/\r?\n/).filter((line) => line.length > width || /\s$/.test(line));
}

describe("fitting", () => {
  test("the width is 80, or COLUMNS when it is smaller, never under 40", () => {
    expect([helpWidth(undefined), helpWidth("100"), helpWidth("60"), helpWidth("10"), helpWidth("x")]).toEqual([80, 80, 60, 40, 80]);
  });

  test("words wrap at blanks under a hanging indent; a word too long stands alone", () => {
    expect(wrap("aa bb cc dd", "> ", "  ", 8)).toEqual(["> aa bb", "  cc dd"]);
    expect(wrap("short averyveryverylongword x", "", "", 10)).toEqual(["short", "averyveryverylongword", "x"]);
  });

  test("an option row's description moves under its column; a signal's column stays", () => {
    const row = `           --status=<ADDRESS>    Pool: answer HTTP at ADDRESS, a description long enough to wrap${" ".repeat(40)}`;
    const fitted = fitHelp(row, 60).split("\n");
    expect(fitted[0]).toStartWith(`${"  --status=<ADDRESS>".padEnd(28)}Pool:`);
    expect(fitted.slice(1).every((l) => l.startsWith(" ".repeat(28)))).toBe(true);
    expect(fitHelp("  HUP        reload: new workers start, each old one finishes its connection", 50)).toBe(
      "  HUP        reload: new workers start, each old\n             one finishes its connection",
    );
  });
});

describe("socket --help", () => {
  test("in a pipe: within 80 columns, no trailing blanks, no colour", async () => {
    const { status, stdout } = await run(["--help"]);
    expect(status).toBe(0);
    expect(misfits(stdout, 80)).toEqual([]);
    expect(stdout).not.toContain("\x1b[");
    expect(stdout).toContain("--max-per-source=<N>");
  });

  test("COLUMNS narrower than 80 is kept; wider is not", async () => {
    const narrow = await run(["--help"], { env: { COLUMNS: "60" } });
    expect(misfits(narrow.stdout, 60)).toEqual([]);
    const wide = await run(["--help"], { env: { COLUMNS: "200" } });
    expect(misfits(wide.stdout, 80)).toEqual([]);
  });

  test("in a terminal (script(1) gives it one): within 80 columns, no colour escapes", async () => {
    const proc = Bun.spawn(["script", "-qec", `COLUMNS=100 ${SOCKET} --help`, "/dev/null"], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
    const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
    const [out, status] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
    clearTimeout(timer);
    expect(status).toBe(0);
    expect(out).toContain("OPTIONS");
    expect(misfits(out, 80)).toEqual([]);
    expect(out).not.toContain("\x1b[");
  });
});
