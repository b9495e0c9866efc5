// The chart, as SVG text: browsers and the repository viewer draw it, so
// no image encoder or font of our own is needed. Top: the connection
// scenarios (conn/s bars, p50 and p99 lines on a log scale) against 1, 8
// and 64 concurrent connections. Below: horizontal bars for 100 MB, the
// launchers' scenario and the idle pools.
import { CONCURRENCY } from "./config.ts";
import { NGINX_ALONE } from "./launchers.ts";
import { median } from "./loadgen.ts";
import { NOT_SUPPORTED } from "./scenarios.ts";
import type { Results } from "./types.ts";

const PALETTE = ["#1f77b4", "#d62728", "#9467bd", "#17becf", "#ff7f0e", "#2ca02c", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
/** The launchers' panels: another palette, so no colour there means a contender of the top row. */
const LAUNCHER_PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f"];
const GREY = "#969696";
const LIGHT = "#e1e1e1";
const INK = "#1e1e1e";

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const n = (v: number) => Number(v.toFixed(1));

class Svg {
  private parts: string[] = [];
  constructor(
    readonly width: number,
    readonly height: number,
  ) {}

  text(x: number, y: number, s: string, opts: { size?: number; anchor?: "start" | "middle" | "end"; fill?: string; bold?: boolean } = {}): void {
    const { size = 13, anchor = "start", fill = INK, bold = false } = opts;
    this.parts.push(
      `<text x="${n(x)}" y="${n(y)}" font-size="${size}" text-anchor="${anchor}" fill="${fill}"${bold ? ' font-weight="bold"' : ""}>${esc(s)}</text>`,
    );
  }

  line(x0: number, y0: number, x1: number, y1: number, stroke: string, width = 1, dash = ""): void {
    this.parts.push(`<line x1="${n(x0)}" y1="${n(y0)}" x2="${n(x1)}" y2="${n(y1)}" stroke="${stroke}" stroke-width="${width}"${dash ? ` stroke-dasharray="${dash}"` : ""}/>`);
  }

  rect(x: number, y: number, w: number, h: number, fill: string, title = ""): void {
    const t = title ? `<title>${esc(title)}</title>` : "";
    this.parts.push(`<rect x="${n(x)}" y="${n(y)}" width="${n(Math.max(0, w))}" height="${n(Math.max(0, h))}" fill="${fill}">${t}</rect>`);
  }

  polyline(points: (readonly [number, number])[], stroke: string): void {
    this.parts.push(`<polyline points="${points.map(([x, y]) => `${n(x)},${n(y)}`).join(" ")}" fill="none" stroke="${stroke}" stroke-width="2.5"/>`);
  }

  dot(x: number, y: number, fill: string, title: string): void {
    this.parts.push(`<circle cx="${n(x)}" cy="${n(y)}" r="4.5" fill="${fill}"><title>${esc(title)}</title></circle>`);
  }

  toString(): string {
    return [
      `<svg xmlns="http://www.w3.org/2000/svg" width="${this.width}" height="${this.height}" viewBox="0 0 ${this.width} ${this.height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
      `<rect width="100%" height="100%" fill="#ffffff"/>`,
      ...this.parts,
      "</svg>",
      "",
    ].join("\n");
  }
}

/** Round tick values for a linear axis from 0 to about `max`. */
function linearTicks(max: number): number[] {
  const raw = Math.max(max, 1e-9) / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw;
  return Array.from({ length: Math.ceil(max / step) + 1 }, (_, i) => i * step);
}

/** 1, 2, 5 × powers of ten covering [min, max], with a little room each side. */
function logTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(min)) - 1; e <= Math.ceil(Math.log10(max)); e++) for (const m of [1, 2, 5]) ticks.push(m * 10 ** e);
  const lo = ticks.filter((t) => t <= min * 0.8).pop() ?? ticks[0];
  const hi = ticks.find((t) => t >= max * 1.2) ?? ticks[ticks.length - 1];
  return ticks.filter((t) => t >= lo && t <= hi);
}

const label = (v: number) => (v >= 1000 ? `${Number((v / 1000).toPrecision(3))}K` : String(Number(v.toPrecision(3))));

interface Bar {
  label: string;
  value: number;
  /** Shown instead of a bar (e.g. "not supported by this build"). */
  note?: string;
  color: string;
}

/** A skipped row's reason, short enough for the panel. */
const short = (why: string | undefined) => (why?.startsWith(NOT_SUPPORTED) ? NOT_SUPPORTED : why);

const BAR_H = 18;
const BAR_GAP = 6;
const barsHeight = (count: number) => 34 + count * (BAR_H + BAR_GAP) + 10;

/**
 * A titled panel of horizontal bars: labels on the left, value at the bar's
 * end; `mark`, a dashed vertical line (a target).
 */
function hbars(
  svg: Svg,
  x: number,
  y: number,
  width: number,
  title: string,
  bars: Bar[],
  unit: string,
  format: (v: number) => string = label,
  mark?: { value: number; text: string },
): void {
  svg.text(x, y + 14, title, { size: 14, bold: true });
  const labelW = 250;
  const barX = x + labelW;
  const barW = width - labelW - 70;
  const max = Math.max(...bars.filter((b) => !b.note).map((b) => b.value).filter(Number.isFinite), mark?.value ?? 0, 1e-9);
  bars.forEach((b, i) => {
    const top = y + 30 + i * (BAR_H + BAR_GAP);
    svg.text(barX - 8, top + 13, b.label, { size: 12, anchor: "end" });
    if (b.note || !Number.isFinite(b.value)) {
      svg.text(barX + 4, top + 13, b.note ?? "not measured", { size: 12, fill: GREY });
      return;
    }
    const w = (b.value / max) * barW;
    svg.rect(barX, top, w, BAR_H, b.color, `${b.label}: ${format(b.value)} ${unit}`);
    svg.text(barX + w + 5, top + 13, `${format(b.value)} ${unit}`, { size: 12 });
  });
  const bottom = y + 30 + bars.length * (BAR_H + BAR_GAP);
  svg.line(barX, y + 26, barX, bottom, INK, 1);
  if (mark) {
    const mx = barX + (mark.value / max) * barW;
    svg.line(mx, y + 26, mx, bottom, GREY, 1.5, "5 4");
    svg.text(mx, bottom + 10, mark.text, { size: 11, anchor: "middle", fill: GREY });
  }
}

export function chart(r: Results): string {
  const conns = r.conns.filter((c) => !c.skipped && c.loops);
  // One colour per contender of the connection scenarios, then the transfer-only ones.
  const named = [...r.conns.map((c) => c.name), ...r.transfers.map((t) => t.name).filter((t) => !r.conns.some((c) => c.name === t))];
  const color = (name: string) => PALETTE[Math.max(0, named.indexOf(name)) % PALETTE.length];
  const launcherColor = (i: number) => LAUNCHER_PALETTE[i % LAUNCHER_PALETTE.length];

  const transferBars: Bar[] = r.transfers.map((t) => ({ label: t.name, value: t.error ? NaN : median(t.mbPerSecond), note: short(t.skipped) ?? (t.error ? "failed" : undefined), color: color(t.name) }));
  const launchers = r.launchers?.rows ?? [];
  const p50Bars: Bar[] = launchers.map((l, i) => ({ label: l.name, value: l.one?.p50 ?? NaN, note: short(l.skipped), color: launcherColor(i) }));
  // nginx alone answers tens of times faster: its figure as text, so the bars stay readable.
  const rpsBars: Bar[] = launchers.map((l, i) => {
    const v = l.at8 ? l.at8.requests / l.at8.seconds : NaN;
    const note = l.name === NGINX_ALONE && Number.isFinite(v) ? `${label(v)} req/s (the floor; no bar, off the scale)` : short(l.skipped);
    return { label: l.name, value: v, note, color: launcherColor(i) };
  });
  const poolBars: Bar[] = r.pools.map((p, i) => ({ label: p.name, value: p.result?.idleCpuPercent ?? NaN, note: short(p.skipped), color: PALETTE[(i + 6) % PALETTE.length] }));

  const W = 1260;
  const top = 80;
  const bottom = 400;
  const legendY = 470;
  const legendRows = Math.ceil(conns.length / 4);
  const row2 = legendY + legendRows * 24 + 30;
  const row2H = Math.max(barsHeight(transferBars.length), barsHeight(p50Bars.length));
  const row3 = row2 + row2H + 20;
  const row3H = Math.max(barsHeight(rpsBars.length), barsHeight(poolBars.length) + 14);
  const svg = new Svg(W, row3 + row3H + 20);
  svg.text(W / 2, 28, `socket benchmark, one run${r.quick ? " (quick mode: rough)" : ""}: ${r.date} UTC, ${r.cores} cores`, { size: 17, anchor: "middle", bold: true });

  const panelW = 340;
  const gap = 80;
  const left0 = 70;
  const panels = [
    { title: "connections per second", value: (c: (typeof conns)[number], k: number) => c.loops![k].perSecond, log: false },
    { title: "latency p50, ms (log scale)", value: (c: (typeof conns)[number], k: number) => c.loops![k].p50, log: true },
    { title: "latency p99, ms (log scale)", value: (c: (typeof conns)[number], k: number) => c.loops![k].p99, log: true },
  ];
  const catFloor = r.floor.find((f) => f.name.startsWith("`cat "))?.ms ?? NaN;
  panels.forEach((panel, p) => {
    const x0 = left0 + p * (panelW + gap);
    const values = conns.flatMap((c) => CONCURRENCY.map((k) => panel.value(c, k))).filter((v) => Number.isFinite(v) && v > 0);
    if (values.length === 0) return;
    if (panel.log && Number.isFinite(catFloor)) values.push(catFloor);
    const ticks = panel.log ? logTicks(Math.min(...values), Math.max(...values)) : linearTicks(Math.max(...values));
    const [lo, hi] = [ticks[0], ticks[ticks.length - 1]];
    const y = (v: number) =>
      panel.log ? bottom - ((Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo))) * (bottom - top) : bottom - ((v - lo) / (hi - lo)) * (bottom - top);
    svg.text(x0 + panelW / 2, top - 18, panel.title, { size: 14, anchor: "middle", bold: true });
    for (const t of ticks) {
      svg.line(x0, y(t), x0 + panelW, y(t), LIGHT);
      svg.text(x0 - 6, y(t) + 4, label(t), { size: 12, anchor: "end" });
    }
    svg.line(x0, top, x0, bottom, INK, 1.5);
    svg.line(x0, bottom, x0 + panelW, bottom, INK, 1.5);
    const slot = panelW / CONCURRENCY.length;
    const xOf = (i: number) => x0 + slot * (i + 0.5);
    CONCURRENCY.forEach((k, i) => svg.text(xOf(i), bottom + 18, String(k), { size: 12, anchor: "middle" }));
    svg.text(x0 + panelW / 2, bottom + 38, "concurrent connections", { size: 12, anchor: "middle" });
    if (!panel.log) {
      const barW = (slot * 0.84) / conns.length;
      conns.forEach((c, j) =>
        CONCURRENCY.forEach((k, i) => {
          const v = panel.value(c, k);
          if (!Number.isFinite(v)) return;
          svg.rect(xOf(i) - slot * 0.42 + j * barW + 0.5, y(v), barW - 1, bottom - y(v), color(c.name), `${c.name} at ${k}: ${v.toFixed(0)} conn/s`);
        }),
      );
      return;
    }
    if (Number.isFinite(catFloor)) {
      svg.line(x0, y(catFloor), x0 + panelW, y(catFloor), GREY, 1.5, "6 5");
      svg.text(x0 + panelW - 4, y(catFloor) - 6, "start of cat alone", { size: 11, anchor: "end", fill: GREY });
    }
    for (const c of conns) {
      const points = CONCURRENCY.map((k, i) => [xOf(i), panel.value(c, k)] as const).filter(([, v]) => Number.isFinite(v) && v > 0);
      svg.polyline(
        points.map(([px, v]) => [px, y(v)] as const),
        color(c.name),
      );
      points.forEach(([px, v], i) => svg.dot(px, y(v), color(c.name), `${c.name} at ${CONCURRENCY[i]}: ${v.toFixed(2)} ms`));
    }
  });

  // The legend of the top row: four contenders a line.
  conns.forEach((c, i) => {
    const lx = left0 + (i % 4) * 290;
    const ly = legendY + Math.floor(i / 4) * 24;
    svg.rect(lx, ly - 12, 16, 16, color(c.name));
    svg.text(lx + 22, ly + 1, c.name, { size: 13 });
  });
  const skipped = r.conns.filter((c) => c.skipped).map((c) => `${c.name}: ${c.skipped}`);
  if (skipped.length) svg.text(left0, legendY + legendRows * 24, `Not drawn: ${skipped.join("; ")}`, { size: 12, fill: GREY });

  const half = W / 2 - 20;
  hbars(svg, 20, row2, half, `${r.settings.transferMb} MB through one connection (cat), MB/s, median`, transferBars, "MB/s");
  if (launchers.length) {
    hbars(svg, W / 2 + 10, row2, half, "nginx → socket → CGI, one request at a time: p50 ms", p50Bars, "ms");
    hbars(svg, 20, row3, half, "nginx → socket → CGI, 8 at a time: requests/s", rpsBars, "req/s");
  } else {
    svg.text(W / 2 + 10, row2 + 14, `nginx → socket → CGI: ${r.launchers?.note ?? "not measured"}`, { size: 13, fill: GREY });
  }
  hbars(svg, W / 2 + 10, row3, half, `idle pool, CPU % of one core over ${r.settings.idleCpuS} s (all its processes)`, poolBars, "%", (v) => v.toFixed(2), { value: 0.5, text: "target 0.5 %" });
  return svg.toString();
}
