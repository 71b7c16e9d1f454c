// The traffic chart: bytes per second per series, drawn as SVG from the node's
// history of cumulative counters (`/api/v1/traffic`). No canvas, no library.

import { h, rate } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 880;
const H = 260;
const PAD = { left: 78, right: 16, top: 14, bottom: 30 };
const COLORS = {
  "received.upstream": "#c2410c",
  "received.peer": "#2563eb",
  "received.local": "#059669",
  "served.peers": "#7c3aed",
};
const FALLBACK = ["#0891b2", "#be123c", "#4d7c0f", "#a16207"];
export const LABELS = {
  "received.upstream": "received from upstream",
  "received.peer": "received from peers",
  "received.local": "served from local store",
  "served.peers": "served to peers",
};

function s(tag, attrs = {}, text = null) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== null) el.textContent = text;
  return el;
}

export function colorOf(name, index) {
  return COLORS[name] ?? FALLBACK[index % FALLBACK.length];
}

// Rates between successive samples: [{at, rates: {name: bytes/s}}].
export function ratesOf(traffic) {
  const out = [];
  const samples = traffic.samples ?? [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1];
    const b = samples[i];
    const dt = b.at - a.at;
    if (!(dt > 0)) continue;
    const rates = {};
    for (const name of traffic.series) {
      rates[name] = Math.max(0, ((b.bytes[name] ?? 0) - (a.bytes[name] ?? 0)) / dt);
    }
    out.push({ at: b.at, rates });
  }
  return out;
}

// A round top for the y axis in the unit the labels use (B, KiB, MiB, … per second),
// so its quarters read as round numbers too.
function niceCeiling(value) {
  if (value <= 0) return 1024;
  let unit = 1;
  while (value / unit >= 1024) unit *= 1024;
  const scaled = value / unit;
  const exp = Math.pow(10, Math.floor(Math.log10(scaled)));
  for (const m of [1, 2, 4, 8, 10]) if (m * exp >= scaled) return m * exp * unit;
  return 10 * exp * unit;
}

export function trafficChart(traffic, series) {
  const points = ratesOf(traffic);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  svg.append(s("title", {}, "Bytes per second by source"));
  if (points.length < 1) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" }, "collecting samples…"));
    return svg;
  }
  const t0 = points[0].at;
  const t1 = Math.max(points[points.length - 1].at, t0 + 1);
  const peak = Math.max(0, ...points.flatMap((p) => series.map((n) => p.rates[n] ?? 0)));
  const top = niceCeiling(peak);
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    svg.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "gridline" }));
    svg.append(s("text", { x: PAD.left - 8, y: y(v) + 4, "text-anchor": "end", class: "axis" }, rate(v)));
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    const label = new Date(t * 1000).toLocaleTimeString(undefined, { hour12: false });
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    svg.append(s("text", { x: x(t), y: H - 8, "text-anchor": anchor, class: "axis" }, label));
  }
  series.forEach((name, index) => {
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(p.at).toFixed(1)},${y(p.rates[name] ?? 0).toFixed(1)}`).join(" ");
    svg.append(s("path", { d, class: "series", stroke: colorOf(name, index), "data-series": name }));
  });
  return svg;
}

export function legend(series) {
  return h(
    "ul",
    { class: "legend" },
    series.map((name, index) => {
      const swatch = h("span", { class: "swatch" });
      swatch.style.background = colorOf(name, index);
      return h("li", {}, swatch, LABELS[name] ?? name);
    }),
  );
}
