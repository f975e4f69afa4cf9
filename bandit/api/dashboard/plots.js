// Line charts drawn by hand on <canvas>: axes with "nice" ticks, lines, bands, markers.
// No library: the dashboard loads nothing from the internet.

// Arms named after a colour are drawn in it ("blue", "green-button", "cta_red"); the others
// take Tableau 10 (without its grey: grey is for axes) in order, leaving out the colours whose
// hue family a colour-named arm of the experiment already shows, so no two arms look alike.
const NAMED_COLOURS = {
  red: ["#dc2626", "red"], crimson: ["#be123c", "red"], maroon: ["#7f1d1d", "red"],
  orange: ["#f97316", "orange"], amber: ["#f59e0b", "orange"],
  yellow: ["#eab308", "yellow"], gold: ["#ca8a04", "yellow"],
  green: ["#16a34a", "green"], lime: ["#65a30d", "green"], olive: ["#6b7d1e", "green"],
  teal: ["#0d9488", "teal"], cyan: ["#0891b2", "teal"], turquoise: ["#14b8a6", "teal"],
  blue: ["#2563eb", "blue"], navy: ["#1e3a8a", "blue"], sky: ["#0ea5e9", "blue"],
  indigo: ["#4f46e5", "purple"], purple: ["#9333ea", "purple"], violet: ["#7c3aed", "purple"],
  magenta: ["#c026d3", "pink"], pink: ["#ec4899", "pink"], rose: ["#e11d48", "pink"],
  brown: ["#92400e", "brown"],
  black: ["#111827", "grey"], grey: ["#6b7280", "grey"], gray: ["#6b7280", "grey"],
  silver: ["#9ca3af", "grey"],
};
const PALETTE = [
  ["#4e79a7", "blue"], ["#f28e2b", "orange"], ["#e15759", "red"], ["#76b7b2", "teal"],
  ["#59a14f", "green"], ["#edc948", "yellow"], ["#b07aa1", "purple"], ["#ff9da7", "pink"],
  ["#9c755f", "brown"],
];

/** [colour, hue family] that an arm's name asks for ("blue", "big-red-button"), or null. */
function namedColour(arm) {
  const word = [arm, ...arm.split(/[-_.]/)].find((w) => Object.hasOwn(NAMED_COLOURS, w));
  return word === undefined ? null : NAMED_COLOURS[word];
}

/**
 * Every arm's colour (a Map from arm id), for the arms of one experiment in their order:
 * colour-named arms get their colour, the others the palette minus the named arms' families.
 */
export function armColours(arms) {
  const families = new Set(arms.map(namedColour).filter(Boolean).map(([, family]) => family));
  const free = PALETTE.filter(([, family]) => !families.has(family)).map(([colour]) => colour);
  const colours = new Map();
  let next = 0;
  for (const arm of arms) {
    if (colours.has(arm)) continue;
    const named = namedColour(arm)?.[0];
    colours.set(arm, named || (next < free.length ? free[next]
      : hslToHex(Math.round((next * 137.508) % 360), 0.55, 0.45))); // golden angle
    if (!named) next += 1;
  }
  return colours;
}

function hslToHex(hue, saturation, lightness) {
  const chroma = (1 - Math.abs(2 * lightness - 1)) * saturation;
  const channel = (n) => {
    const k = (n + hue / 30) % 12;
    const value = lightness - chroma * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(255 * value).toString(16).padStart(2, "0");
  };
  return `#${channel(0)}${channel(8)}${channel(4)}`;
}

export function withAlpha(hex, alpha) {
  const value = parseInt(hex.slice(1), 16);
  return `rgba(${value >> 16}, ${(value >> 8) & 255}, ${value & 255}, ${alpha})`;
}

/** About ``count`` round ticks (1, 2 or 5 times a power of ten) covering [low, high]. */
export function niceTicks(low, high, count = 5) {
  if (!(high > low)) return [low];
  const raw = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || 10 * power;
  const ticks = [];
  for (let tick = Math.ceil(low / step) * step; tick <= high + step * 1e-9; tick += step) {
    ticks.push(Math.abs(tick) < step * 1e-9 ? 0 : Number(tick.toPrecision(12)));
  }
  return ticks;
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
  21600, 43200, 86400, 172800, 604800];

/** Ticks on epoch seconds at round local clock times. */
export function timeTicks(low, high, count = 6) {
  const step = TIME_STEPS.find((s) => (high - low) / s <= count) || TIME_STEPS.at(-1);
  const offset = new Date(low * 1000).getTimezoneOffset() * 60;
  const ticks = [];
  for (let tick = Math.ceil((low - offset) / step) * step + offset; tick <= high;
    tick += step) ticks.push(tick);
  const format = (t) => {
    const date = new Date(t * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
    if (step < 60) return `${clock}:${pad(date.getSeconds())}`;
    if (step >= 86400) return `${date.getMonth() + 1}/${date.getDate()}`;
    return clock;
  };
  return { ticks, format };
}

/** Ticks on a duration axis (seconds from 0) at round durations. */
export function durationTicks(low, high, count = 6) {
  const step = TIME_STEPS.find((s) => (high - low) / s <= count) || TIME_STEPS.at(-1);
  const ticks = [];
  for (let tick = Math.ceil(low / step) * step; tick <= high; tick += step) ticks.push(tick);
  return { ticks, format: formatDuration };
}

/** "1h 5m", "42 s": a duration for axes and tables. */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return "—";
  if (seconds < 1) return `${Number(seconds.toPrecision(2))} s`;
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  if (whole < 3600) {
    const [minutes, rest] = [Math.floor(whole / 60), whole % 60];
    return rest ? `${minutes}m ${rest}s` : `${minutes} min`;
  }
  const totalMinutes = Math.round(whole / 60);
  if (totalMinutes < 1440) {
    const [hours, minutes] = [Math.floor(totalMinutes / 60), totalMinutes % 60];
    return minutes ? `${hours}h ${minutes}m` : `${hours} h`;
  }
  const totalHours = Math.round(whole / 3600);
  const [days, hours] = [Math.floor(totalHours / 24), totalHours % 24];
  return hours ? `${days}d ${hours}h` : `${days} d`;
}

export function formatTick(value, step) {
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e5 || magnitude < 1e-4) return value.toExponential(1);
  // As many decimals as the step needs (0.25 needs 2), so ticks never round alike.
  let decimals = 0;
  const unit = step || magnitude;
  while (decimals < 6 && Math.abs(Math.round(unit * 10 ** decimals) - unit * 10 ** decimals)
    > 1e-6 * 10 ** decimals * unit) decimals++;
  return value.toFixed(decimals);
}

const MARGIN = { top: 12, right: 16, bottom: 34, left: 54 };
const FONT = "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";

/** The canvas sized to `width` x `height` CSS pixels at the screen's pixel ratio, cleared,
 * with a context that draws in CSS pixels. */
function clearedContext(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  context.font = FONT;
  return context;
}

/**
 * Draws a chart on ``canvas`` (sized to its CSS box, sharp on high-DPI screens).
 *
 * spec: {x: {domain: [lo, hi], ticks?: {ticks, format}, label}, y: {domain, label, format?},
 *        series: [{colour, points: [[x, y]], width?, dash?, fill?}],
 *        bands: [{colour, points: [[x, lo, hi]]}], markers: [{x, label}],
 *        rules: [{y, label, colour?}], empty?: string}
 * (markers: dashed vertical lines, e.g. setting changes; rules: dashed horizontal ones, e.g.
 * thresholds, labelled under the line at its left end.) Returns the scales, for hover read-outs.
 */
export function drawChart(canvas, spec) {
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  const context = clearedContext(canvas, width, height);
  const plot = {
    left: MARGIN.left, top: MARGIN.top,
    right: width - MARGIN.right, bottom: height - MARGIN.bottom,
  };
  const [xLow, xHigh] = spec.x.domain;
  const [yLow, yHigh] = spec.y.domain;
  const xScale = (x) => plot.left + ((x - xLow) / (xHigh - xLow || 1)) * (plot.right - plot.left);
  const yScale = (y) => plot.bottom - ((y - yLow) / (yHigh - yLow || 1)) * (plot.bottom - plot.top);
  const scales = { xScale, yScale, plot, xDomain: spec.x.domain, yDomain: spec.y.domain };

  drawAxes(context, spec, scales);
  if (spec.empty) {
    context.fillStyle = "#6b7280";
    context.textAlign = "center";
    context.fillText(spec.empty, (plot.left + plot.right) / 2, (plot.top + plot.bottom) / 2);
    return scales;
  }
  context.save();
  context.beginPath();
  context.rect(plot.left, plot.top - 2, plot.right - plot.left, plot.bottom - plot.top + 4);
  context.clip();
  for (const band of spec.bands || []) drawBand(context, band, scales);
  for (const marker of spec.markers || []) drawMarker(context, marker, scales);
  for (const rule of spec.rules || []) drawRule(context, rule, scales);
  for (const series of spec.series) drawSeries(context, series, scales);
  context.restore();
  return scales;
}

function drawAxes(context, spec, { xScale, yScale, plot }) {
  const yTicks = niceTicks(spec.y.domain[0], spec.y.domain[1], 5);
  const yStep = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 0;
  const yFormat = spec.y.format || ((v) => formatTick(v, yStep));
  context.lineWidth = 1;
  context.textAlign = "right";
  context.textBaseline = "middle";
  for (const tick of yTicks) {
    const y = Math.round(yScale(tick)) + 0.5;
    context.strokeStyle = "#e5e7eb";
    context.beginPath();
    context.moveTo(plot.left, y);
    context.lineTo(plot.right, y);
    context.stroke();
    context.fillStyle = "#4b5563";
    context.fillText(yFormat(tick), plot.left - 6, y);
  }
  const xTicks = spec.x.ticks || (() => {
    const ticks = niceTicks(spec.x.domain[0], spec.x.domain[1], 6);
    const step = ticks.length > 1 ? ticks[1] - ticks[0] : 0;
    return { ticks, format: spec.x.format || ((v) => formatTick(v, step)) };
  })();
  context.textAlign = "center";
  context.textBaseline = "top";
  for (const tick of xTicks.ticks) {
    const x = Math.round(xScale(tick)) + 0.5;
    if (x < plot.left - 1 || x > plot.right + 1) continue;
    context.strokeStyle = "#9ca3af";
    context.beginPath();
    context.moveTo(x, plot.bottom);
    context.lineTo(x, plot.bottom + 4);
    context.stroke();
    context.fillStyle = "#4b5563";
    context.fillText(xTicks.format(tick), x, plot.bottom + 6);
  }
  context.strokeStyle = "#9ca3af";
  context.beginPath();
  context.moveTo(plot.left + 0.5, plot.top);
  context.lineTo(plot.left + 0.5, plot.bottom + 0.5);
  context.lineTo(plot.right, plot.bottom + 0.5);
  context.stroke();
  context.fillStyle = "#374151";
  if (spec.x.label) {
    context.textAlign = "right";
    context.textBaseline = "bottom";
    context.fillText(spec.x.label, plot.right, plot.bottom + 33);
  }
  if (spec.y.label) {
    context.save();
    context.translate(12, (plot.top + plot.bottom) / 2);
    context.rotate(-Math.PI / 2);
    context.textAlign = "center";
    context.textBaseline = "middle";
    context.fillText(spec.y.label, 0, 0);
    context.restore();
  }
}

function drawSeries(context, series, { xScale, yScale, plot }) {
  const points = series.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (!points.length) return;
  if (series.fill) {
    context.fillStyle = series.fill;
    context.beginPath();
    context.moveTo(xScale(points[0][0]), plot.bottom);
    for (const [x, y] of points) context.lineTo(xScale(x), yScale(y));
    context.lineTo(xScale(points.at(-1)[0]), plot.bottom);
    context.closePath();
    context.fill();
  }
  context.strokeStyle = series.colour;
  context.lineWidth = series.width || 2;
  context.lineJoin = "round";
  context.setLineDash(series.dash || []);
  context.beginPath();
  points.forEach(([x, y], i) => {
    if (i === 0) context.moveTo(xScale(x), yScale(y));
    else context.lineTo(xScale(x), yScale(y));
  });
  if (points.length === 1) { // a single sample: a dot, so it is not invisible
    context.arc(xScale(points[0][0]), yScale(points[0][1]), 2.5, 0, 2 * Math.PI);
    context.fillStyle = series.colour;
    context.fill();
  }
  context.stroke();
  context.setLineDash([]);
}

function drawBand(context, band, { xScale, yScale }) {
  const points = band.points.filter((p) => p.every(Number.isFinite));
  if (points.length < 2) return;
  context.fillStyle = band.colour;
  context.beginPath();
  points.forEach(([x, , high], i) => {
    if (i === 0) context.moveTo(xScale(x), yScale(high));
    else context.lineTo(xScale(x), yScale(high));
  });
  for (const [x, low] of [...points].reverse()) context.lineTo(xScale(x), yScale(low));
  context.closePath();
  context.fill();
}

/** Setting changes on the time plots: dashed lines of this colour. */
export const MARKER_COLOUR = "#6b7280";

function drawMarker(context, marker, { xScale, plot }) {
  const x = Math.round(xScale(marker.x)) + 0.5;
  context.strokeStyle = marker.colour || MARKER_COLOUR;
  context.lineWidth = 1;
  context.setLineDash([3, 3]);
  context.beginPath();
  context.moveTo(x, plot.top);
  context.lineTo(x, plot.bottom);
  context.stroke();
  context.setLineDash([]);
  context.fillStyle = "#6b7280";
  const nearRightEdge = x > plot.right - 30; // keep the label inside the plot
  context.textAlign = nearRightEdge ? "right" : "left";
  context.textBaseline = "top";
  context.fillText(marker.label, nearRightEdge ? x - 3 : x + 3, plot.top + 1);
}

function drawRule(context, rule, { yScale, plot }) {
  const y = Math.round(yScale(rule.y)) + 0.5;
  context.strokeStyle = rule.colour || MARKER_COLOUR;
  context.lineWidth = 1;
  context.setLineDash([6, 4]);
  context.beginPath();
  context.moveTo(plot.left, y);
  context.lineTo(plot.right, y);
  context.stroke();
  context.setLineDash([]);
  // Under the line, at the left (the newest samples are on the right).
  context.fillStyle = "#4b5563";
  context.textAlign = "left";
  context.textBaseline = "top";
  context.fillText(rule.label, plot.left + 4, y + 2);
}

const ROW_HEIGHT = 26;

/**
 * Intervals on one axis, a row each (a forest plot), with a reference line at ``reference``.
 * rows: [{label, colour, mean, low, high, note?}] (a row without an interval shows its note);
 * the canvas's height follows its rows; ``domain`` fixes the axis (several plots on one
 * scale), else it covers the rows. Returns the scales.
 */
export function drawIntervals(canvas, { rows, reference = 0, format, label, domain }) {
  const height = Math.max(1, rows.length) * ROW_HEIGHT + 44;
  if (canvas.clientHeight !== height) canvas.style.height = `${height}px`;
  const width = canvas.clientWidth;
  const context = clearedContext(canvas, width, height);
  const widest = Math.max(30, ...rows.map((row) => context.measureText(row.label).width));
  const labels = Math.min(widest, width * 0.3);
  const plot = { left: labels + 16, right: width - MARGIN.right, top: 6, bottom: height - 38 };
  const drawn = rows.filter((row) => [row.mean, row.low, row.high].every(Number.isFinite));
  let [low, high] = domain || [Math.min(reference, ...drawn.map((row) => row.low)),
    Math.max(reference, ...drawn.map((row) => row.high))];
  if (!domain) {
    const pad = (high - low) * 0.05 || 0.05;
    low -= pad;
    high += pad;
  }
  const xScale = (x) => plot.left + ((x - low) / (high - low)) * (plot.right - plot.left);
  // About one tick per 70 px, but at least three on a narrow plot (a small multiple).
  let count = Math.max(2, Math.floor((plot.right - plot.left) / 70));
  let ticks = niceTicks(low, high, count);
  while (ticks.length < 3 && count < 16) ticks = niceTicks(low, high, count *= 2);
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : 0;
  context.textAlign = "center";
  context.textBaseline = "top";
  context.lineWidth = 1;
  for (const tick of ticks) {
    const x = Math.round(xScale(tick)) + 0.5;
    context.strokeStyle = "#eef0f3";
    context.beginPath();
    context.moveTo(x, plot.top);
    context.lineTo(x, plot.bottom);
    context.stroke();
    context.fillStyle = "#4b5563";
    context.fillText(format ? format(tick) : formatTick(tick, step), x, plot.bottom + 6);
  }
  const zero = Math.round(xScale(reference)) + 0.5;
  context.strokeStyle = "#6b7280";
  context.beginPath();
  context.moveTo(zero, plot.top);
  context.lineTo(zero, plot.bottom);
  context.stroke();
  if (label) {
    context.fillStyle = "#374151";
    context.textAlign = "right";
    context.textBaseline = "bottom";
    context.fillText(label, plot.right, height - 2);
  }
  rows.forEach((row, i) => {
    const y = plot.top + (i + 0.5) * ROW_HEIGHT;
    context.textBaseline = "middle";
    context.textAlign = "right";
    context.fillStyle = "#1f2937";
    context.fillText(fitText(context, row.label, labels), plot.left - 10, y);
    if (![row.mean, row.low, row.high].every(Number.isFinite)) {
      context.textAlign = "left";
      context.fillStyle = "#6b7280";
      context.fillText(row.note || "", zero + 6, y);
      return;
    }
    context.strokeStyle = row.colour;
    context.lineWidth = 4;
    context.lineCap = "round";
    context.beginPath();
    context.moveTo(xScale(row.low), y);
    context.lineTo(xScale(row.high), y);
    context.stroke();
    context.lineCap = "butt";
    context.fillStyle = row.colour;
    context.beginPath();
    context.arc(xScale(row.mean), y, 6, 0, 2 * Math.PI);
    context.fill();
  });
  return { xScale, plot, xDomain: [low, high] };
}

function fitText(context, text, width) {
  if (context.measureText(text).width <= width) return text;
  let shown = text;
  while (shown.length > 1 && context.measureText(`${shown}…`).width > width) {
    shown = shown.slice(0, -1);
  }
  return `${shown}…`;
}
