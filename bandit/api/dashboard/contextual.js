// A contextual experiment's own plots: each arm's coefficients (dot and whisker, one small chart
// per arm on a shared axis), and its allocation by segment over time (for each value of a
// categorical feature, each arm's share of the decisions served in every history interval,
// stacked). Both come from what the service reports: the stats' `model`, and the cumulative
// `segments` counts of the history samples, differenced sample by sample.

import { fill, formatCount, formatNumber, formatPercent, h } from "./dom.js";
import { drawChart, drawIntervals, timeTicks } from "./plots.js";

/** Arms drawn in the coefficient grid (the others are named in its caption). */
const MAX_COEFFICIENT_ARMS = 12;

/** Each arm's share of the decisions between two samples, by arm name (NaN: none served);
 * ``counts(sample)`` gives a sample's cumulative counts in its arm order. */
function intervalShares(previous, sample, counts) {
  const before = new Map();
  if (previous) {
    const values = counts(previous) || [];
    previous.arms.forEach((arm, i) => before.set(arm, values[i] || 0));
  }
  const now = counts(sample) || [];
  const deltas = sample.arms.map((arm, i) => Math.max(0, (now[i] || 0) - (before.get(arm) || 0)));
  const total = deltas.reduce((sum, value) => sum + value, 0);
  return { total, shares: deltas.map((value) => (total > 0 ? value / total : NaN)) };
}

/**
 * A contextual sample's ``plotShare``: the average propensity of each arm over the draws since
 * the sample before (the samples' ``share`` is the average since creation), so the allocation
 * plot shows what each interval served. The first sample known keeps its own average.
 */
export function annotateShares(samples, from = 0) {
  for (let k = from; k < samples.length; k++) {
    const sample = samples[k];
    if (!sample.segments || !sample.expected) {
      sample.plotShare = sample.share;
      continue;
    }
    const { shares } = intervalShares(samples[k - 1], sample, (s) => s.expected);
    sample.plotShare = k === 0 ? sample.share : shares;
  }
}

/**
 * The grid's figures, one per key ({figure, canvas, detail}: ``make(key)``), kept while the keys
 * stay the same: the page refreshes every few seconds, and charts redrawn in place do not move
 * under the reader (nor under a test holding one).
 */
function keyedFigures(grid, cache, keys, make) {
  const key = keys.join("\u001f");
  if (cache.key !== key) {
    cache.key = key;
    cache.items = keys.map(make);
    fill(grid, cache.items.map((item) => item.figure));
  }
  return cache.items;
}

/** The categorical features of a model, each with its segments (declared values, "other"). */
function categoricalFeatures(model) {
  return (model?.features || []).filter((feature) => feature.type === "categorical")
    .map((feature) => ({ name: feature.name, values: [...feature.values, "other"] }));
}

/**
 * The panel: two cards, hidden for a context-free experiment.
 * options: {colour(arm), arms() (every arm in colour order), tickCount(canvas)}
 */
export function contextualPanel({ colour, arms, tickCount }) {
  const state = { config: null, stats: null, samples: [], timed: null };
  const coefficientGrid = h("div", { class: "small-multiples", "data-testid": "coefficient-grid" });
  const coefficientNote = h("p", { class: "caption", "data-testid": "coefficient-caption" });
  const featureSelect = h("select", { "aria-label": "categorical feature",
    "data-testid": "segment-feature", onchange: () => drawSegments() });
  const segmentGrid = h("div", { class: "small-multiples", "data-testid": "segment-grid" });
  const segmentNote = h("p", { class: "caption", "data-testid": "segment-caption" });
  const segmentCard = h("section", { class: "card", "data-testid": "segment-card" },
    h("div", { class: "card-head" }, h("h2", {}, "Allocation by segment"), featureSelect),
    segmentGrid, segmentNote);
  const element = h("div", { class: "contextual", hidden: true, "data-testid": "contextual" },
    h("section", { class: "card", "data-testid": "coefficient-card" },
      h("div", { class: "card-head" }, h("h2", {}, "Coefficients of each arm's model")),
      coefficientGrid, coefficientNote),
    segmentCard);
  let drawnFeatures = "";
  const coefficientFigures = {};
  const segmentFigures = {};

  /** ``timed``: the time range the other time plots show ({shown, domain}), or null. */
  function update(config, stats, samples, timed) {
    Object.assign(state, { config, stats, samples, timed });
    element.hidden = !config.model || !stats.model;
    if (element.hidden) return;
    const features = categoricalFeatures(config.model);
    const names = features.map((feature) => feature.name).join("\u001f");
    if (names !== drawnFeatures) { // the model is fixed at create: built once
      drawnFeatures = names;
      fill(featureSelect, features.map((feature) => h("option", { value: feature.name },
        feature.name)));
    }
    featureSelect.hidden = features.length < 2;
    segmentCard.hidden = !features.length;
    draw();
  }

  function draw() {
    if (element.hidden) return;
    drawCoefficients();
    drawSegments();
  }

  function drawCoefficients() {
    const { model } = state.stats;
    const shown = model.arms.slice(0, MAX_COEFFICIENT_ARMS);
    const bounds = shown.flatMap((arm) => arm.ci95.flat()).filter(Number.isFinite);
    const domain = bounds.length ? [Math.min(0, ...bounds), Math.max(0, ...bounds)] : [-1, 1];
    const pad = (domain[1] - domain[0]) * 0.04 || 0.05;
    const shared = [domain[0] - pad, domain[1] + pad];
    const figures = keyedFigures(coefficientGrid, coefficientFigures,
      shown.map((arm) => arm.arm), (name) => {
        const canvas = h("canvas", { class: "plot intervals", role: "img",
          "data-testid": "coefficient-plot", "data-arm": name });
        const detail = h("span", { class: "muted" });
        return { canvas, detail, figure: h("figure", { "data-arm": name },
          h("figcaption", {}, h("i", { class: "swatch", style: `background:${colour(name)}` }),
            h("strong", {}, name), detail), canvas) };
      });
    shown.forEach((arm, k) => {
      const { canvas, detail } = figures[k];
      detail.textContent = ` · n ${formatCount(arm.n)}`;
      canvas.setAttribute("aria-label", `Coefficients of arm ${arm.arm}, posterior mean and ` +
        "95% interval: " + model.columns.map((column, j) => `${column} ` +
          `${formatNumber(arm.mean[j])} [${formatNumber(arm.ci95[j][0])}, ` +
          `${formatNumber(arm.ci95[j][1])}]`).join("; "));
      drawIntervals(canvas, { domain: shared, label: "coefficient", rows: model.columns.map(
        (column, j) => ({ label: column, colour: colour(arm.arm), mean: arm.mean[j],
          low: arm.ci95[j][0], high: arm.ci95[j][1], note: "—" })) });
    });
    const hidden = model.arms.length - shown.length;
    fill(coefficientNote, "Each arm's expected reward is the sum of its coefficients times " +
      "the context's columns: the intercept, 1 for the value a categorical feature takes (any " +
      "undeclared value is other), numeric features scaled to [0, 1]. Dots: posterior means; " +
      "bars: 95% intervals (untempered), on one axis for every arm. Within a feature, compare " +
      "its values' columns with one another: the intercept and a feature's columns share " +
      "their level.", hidden > 0 ? ` ${hidden} more arms are not drawn: ` +
      `${model.arms.slice(MAX_COEFFICIENT_ARMS).map((arm) => arm.arm).join(", ")}.` : "");
  }

  function drawSegments() {
    const { config, samples, timed } = state;
    const features = categoricalFeatures(config.model);
    const feature = features.find((f) => f.name === featureSelect.value) || features[0];
    if (!feature) return;
    // Intervals ending in the time range, each from the sample before it.
    const intervals = [];
    if (timed) {
      const [low] = timed.domain;
      for (let k = 1; k < samples.length; k++) {
        if (samples[k].t < low || !samples[k].segments) continue;
        intervals.push([samples[k - 1], samples[k]]);
      }
    }
    const empty = [];
    const figures = [];
    for (const value of feature.values) {
      const segment = `${feature.name}=${value}`;
      const counts = (sample) => sample.segments?.[segment] || (sample.segments ? [] : null);
      const steps = intervals.map(([before, after]) => ({
        from: Math.max(before.t, timed.domain[0]), to: after.t, arms: after.arms,
        ...intervalShares(before.segments ? before : null, after, counts) }))
        .filter((step) => step.total > 0);
      const ever = samples.some((s) => (s.segments?.[segment] || []).some((c) => c > 0));
      if (!ever) {
        empty.push(value);
        continue;
      }
      figures.push({ segment, steps });
    }
    const charts = keyedFigures(segmentGrid, segmentFigures,
      figures.map((figure) => figure.segment), (segment) => {
        const canvas = h("canvas", { class: "plot small", role: "img",
          "data-testid": "segment-plot", "data-segment": segment });
        const detail = h("span", { class: "muted" });
        const value = segment.slice(feature.name.length + 1);
        return { canvas, detail, figure: h("figure", { "data-segment": segment },
          h("figcaption", {}, h("strong", {}, `${feature.name} = ${value}`), detail), canvas) };
      });
    figures.forEach(({ segment, steps }, k) => {
      const decisions = steps.reduce((sum, step) => sum + step.total, 0);
      const totals = new Map();
      for (const step of steps) {
        step.arms.forEach((arm, i) => {
          if (Number.isFinite(step.shares[i])) {
            totals.set(arm, (totals.get(arm) || 0) + step.shares[i] * step.total);
          }
        });
      }
      const summary = [...totals].filter(([, count]) => count > 0)
        .map(([arm, count]) => `${arm} ${formatPercent(count / decisions)}`).join(", ");
      const { canvas, detail } = charts[k];
      detail.textContent = ` · ${formatCount(decisions)} decisions`;
      canvas.dataset.decisions = String(decisions);
      canvas.setAttribute("aria-label", `Allocation in segment ${segment} over time: ` +
        (decisions ? `${formatCount(decisions)} decisions in the range, ${summary}`
          : "no decisions in the range"));
      drawStacked(canvas, steps);
    });
    fill(segmentNote, intervals.length
      ? "Each arm's share of the decisions served in the segment, per history interval, " +
        "stacked (gaps: none served)."
      : "Allocation by segment needs two history samples in the time range.",
    empty.length ? ` No decisions yet: ${empty.map((v) => `${feature.name} = ${v}`)
      .join(", ")}.` : "");
  }

  /** Stacked step areas: each arm's share of each interval, in the arms' colour order. */
  function drawStacked(canvas, steps) {
    const domain = state.timed ? state.timed.domain : [0, 1];
    const order = arms();
    const bands = [];
    // A band per arm per run of consecutive intervals (a gap where nothing was served).
    let run = null;
    let runEnd = null;
    const runs = [];
    for (const step of steps) {
      if (!run || step.from > runEnd + 1e-9) runs.push(run = []);
      run.push(step);
      runEnd = step.to;
    }
    for (const steps of runs) {
      const below = steps.map(() => 0);
      for (const arm of order) {
        const points = [];
        steps.forEach((step, k) => {
          const i = step.arms.indexOf(arm);
          const share = i < 0 || !Number.isFinite(step.shares[i]) ? 0 : step.shares[i];
          points.push([step.from, below[k], below[k] + share], [step.to, below[k],
            below[k] + share]);
          below[k] += share;
        });
        if (points.some(([, lo, hi]) => hi > lo)) {
          bands.push({ colour: colour(arm), points });
        }
      }
    }
    const [low, high] = domain;
    drawChart(canvas, {
      x: { domain: [low, high], ticks: timeTicks(low, high, tickCount(canvas)) },
      y: { domain: [0, 1], label: "share", format: (v) => `${Math.round(v * 100)}%` },
      series: [], bands,
      empty: steps.length ? undefined : "No decisions in this time range.",
    });
  }

  return { element, update, draw };
}
