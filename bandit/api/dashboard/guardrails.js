// An experiment's guardrails beside its primary metric: the definitions (metric, kind,
// direction, threshold) and the control they are judged against, the hard gate, and per arm
// and metric the posterior mean with its 95% interval and P(violates), then each arm's
// P(violates any), P(best feasible) and whether the gate holds it. Hidden without guardrails.

import { formatInterval, formatNumber, formatPercent, h, fill } from "./dom.js";

/** The hard gate holds an arm from this P(violates any) (``policy.GATE_ON``)... */
export const GATE_ON = 0.95;
/** ...until it falls below this one (``policy.GATE_OFF``). */
export const GATE_OFF = 0.8;
/** Where the gate lets an arm go again: from here P(violates) is highlighted. */
const WARN_AT = GATE_OFF;

/**
 * P(violates a guardrail) over time, per arm (the history samples' ``p_violates``; samples
 * taken before the experiment had guardrails have none): a line per arm that has a value
 * (not the control, not while paused), and under it a thick translucent line over each
 * stretch of consecutive samples where the gate held the arm. ``colour(arm)`` and
 * ``withAlpha`` are the time plots'.
 */
export function violationSeries(shown, arms, colour, withAlpha) {
  const lines = [];
  const held = [];
  for (const arm of arms) {
    const points = [];
    let stretch = null;
    for (const sample of shown) {
      const i = sample.arms.indexOf(arm);
      const value = i < 0 ? null : sample.p_violates?.[i];
      if (!Number.isFinite(value)) {
        stretch = null;
        continue;
      }
      points.push([sample.t, value]);
      if (sample.held?.[i]) {
        if (!stretch) held.push(stretch = { arm, points: [] });
        stretch.points.push([sample.t, value]);
      } else {
        stretch = null;
      }
    }
    if (points.length) lines.push({ arm, colour: colour(arm), points });
  }
  const underlays = held.map((stretch) => ({ arm: stretch.arm, points: stretch.points,
    colour: withAlpha(colour(stretch.arm), 0.35), width: 9 }));
  return { series: [...underlays, ...lines], held, lines };
}

/** A threshold in words: "≥ control − 2% of |control|" or "≤ 0.01". */
export function thresholdText(guardrail) {
  const [[which, level]] = Object.entries(guardrail.threshold);
  const sign = guardrail.direction === "higher" ? "≥" : "≤";
  if (which === "absolute") return `mean ${sign} ${formatNumber(level)}`;
  const percent = `${Math.abs(level * 100).toFixed(Math.abs(level) < 0.1 ? 1 : 0)}%`;
  return `mean ${sign} control's ${level < 0 ? "−" : "+"} ${percent} of |control's|`;
}

function violates(value, held, testid) {
  if (value === null || value === undefined) {
    return h("td", { class: "num muted", "data-col": testid }, "—");
  }
  const warn = value >= WARN_AT;
  return h("td", { class: `num${warn ? " violates" : ""}`, "data-col": testid,
    "data-warn": warn ? "true" : "false", title: String(value) },
  formatPercent(value), held ? h("span", { class: "badge held" }, "held") : null);
}

export function guardrailPanel({ colour }) {
  const definitions = h("ul", { class: "guardrail-list", "data-testid": "guardrail-list" });
  const note = h("p", { class: "caption", "data-testid": "guardrail-caption" });
  const head = h("tr");
  const body = h("tbody");
  const element = h("section", { class: "card", "data-testid": "guardrails", hidden: true },
    h("h2", {}, "Guardrails"), definitions,
    h("div", { class: "table-scroll" },
      h("table", { class: "table", "data-testid": "guardrail-table" }, h("thead", {}, head),
        body)),
    note);

  function update(stats) {
    const report = stats.guardrails;
    element.hidden = !report;
    if (!report) return;
    const control = report.control;
    fill(definitions, report.metrics.map((g) => h("li", { "data-metric": g.metric },
      h("code", {}, g.metric), ` ${g.kind}, ${g.direction} is better: `,
      h("span", { "data-col": "threshold" }, thresholdText(g)))),
    h("li", { "data-testid": "guardrail-control" }, "Control: ",
      h("strong", {}, control ?? "none"),
      control ? " (always feasible; relative thresholds are judged against its means)" : ""),
    h("li", { "data-testid": "guardrail-gate" }, report.gate_min_samples === null
      ? "Hard gate: off (P(best feasible) alone steers traffic away from violating arms)"
      : `Hard gate: an arm with ${formatNumber(report.gate_min_samples)} observations of ` +
        "every metric is held at the floor once P(violates) ≥ 95%, until it is < 80%"));
    fill(head, h("th", {}, "Arm"), report.metrics.map((g) => [
      h("th", { class: "num" }, `${g.metric} mean [95% interval]`),
      h("th", { class: "num" }, `P(violates ${g.metric})`)]),
    h("th", { class: "num" }, "P(violates any)"), h("th", { class: "num" }, "P(best feasible)"),
    h("th", {}, "Gate"));
    fill(body, stats.arms.map((arm) => h("tr", { "data-arm": arm.arm,
      class: `${arm.state}${arm.held ? " held" : ""}` },
    h("td", { "data-col": "arm" }, h("i", { class: "swatch",
      style: `background:${colour(arm.arm)}` }), arm.arm,
    arm.arm === control ? h("span", { class: "muted" }, " (control)") : null),
    report.metrics.map((g) => {
      const value = arm.guardrails?.[g.metric];
      return [h("td", { class: "num", "data-col": `mean-${g.metric}`,
        title: value ? `n ${formatNumber(value.n)}` : "" },
      value ? `${formatNumber(value.mean)} ${formatInterval(value.ci95)}` : "—"),
      violates(value?.p_violates, false, `p-${g.metric}`)];
    }),
    violates(arm.p_violates, arm.held, "p_violates"),
    h("td", { class: "num", "data-col": "p_best_feasible" }, formatPercent(arm.p_best_feasible)),
    h("td", { "data-col": "held" }, arm.held
      ? h("span", { class: "badge held" }, "held at floor") : h("span", { class: "muted" },
        "—")))));
    const held = stats.arms.filter((arm) => arm.held).map((arm) => arm.arm);
    fill(note, held.length ? `Held by the gate: ${held.join(", ")}. ` : "No arm is held. ",
      `P(violates) from ${Math.round(WARN_AT * 100)}% is highlighted. Traffic follows ` +
      "P(best feasible) with the exploration settings folded in",
      report.monte_carlo_error > 0
        ? ` (Monte Carlo error up to ${formatNumber(report.monte_carlo_error)}).` : ".");
  }

  return { element, update };
}
