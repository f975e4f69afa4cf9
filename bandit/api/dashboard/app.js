// The operator dashboard: hash routes (#/ the experiments, #/exp/<id> one experiment, #/layers
// the layers), data
// refreshed every few seconds without touching what the operator is typing.

import { api, apiKey, setApiKey } from "./api.js";
import { annotateShares, contextualPanel } from "./contextual.js";
import { $, chip, fill, formatCount, formatInterval, formatNumber, formatPercent,
  formatSetting, formatTime, h, liftText } from "./dom.js";
import { GATE_OFF, GATE_ON, guardrailPanel, violationSeries } from "./guardrails.js";
import { layersView } from "./layers.js";
import { listView } from "./list.js";
import { posteriorDensity } from "./maths.js";
import { armColours, drawChart, drawIntervals, formatDuration, timeTicks, withAlpha }
  from "./plots.js";
import { SettingsPanel, changeList } from "./settings.js";
import { loadRules } from "./validate.js";

const REFRESH_MS = 5000;
const MAX_SAMPLES = 20000;
const MAX_LIFT_ROWS = 30;

const state = {
  view: null, // the current view: {kind, id?, refresh(), destroy?(), resize?()}
  refreshing: false,
  readOnly: null, // why the key cannot change settings (a 403 said so), or null
};

// -- header: API key, refresh, messages -----------------------------------------------------

function setupHeader() {
  const input = $("#api-key");
  input.value = apiKey();
  $("#api-key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    state.readOnly = null;
    showAuthProblem(null);
    notify(input.value.trim() ? "API key saved in this browser." : "API key cleared.");
    checkIdentity();
    refreshNow();
  });
  $("#api-key-clear").addEventListener("click", () => {
    input.value = "";
    setApiKey("");
    state.readOnly = null;
    showAuthProblem(null);
    notify("API key cleared.");
    checkIdentity();
    refreshNow();
  });
  $("#refresh-now").addEventListener("click", () => refreshNow());
  $("#auto-refresh").addEventListener("change", () => {
    if ($("#auto-refresh").checked) refreshNow();
  });
}

let toastTimer = null;

function notify(message) {
  const toast = $("#toast");
  toast.textContent = message;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toast.hidden = true; }, 6000);
}

/** A 401/403 (or null to clear): shown at the top, with the key field to fix it. */
function showAuthProblem(error, action) {
  const banner = $("#auth-banner");
  if (!error) {
    banner.hidden = true;
    banner.dataset.action = "";
    applyReadOnly();
    return;
  }
  const wasShown = !banner.hidden;
  const hint = error.status === 401
    ? "The service wants an API key: enter one in the field above."
    : "Your API key lacks the scope for this.";
  banner.textContent = `${error.status} ${error.status === 401 ? "Unauthorized" : "Forbidden"}` +
    `${action ? ` (${action})` : ""}: ${error.message}. ${hint}`;
  banner.hidden = false;
  banner.dataset.action = action || "read";
  if (error.status === 403 && (action === "apply" || action === "forecast")) {
    state.readOnly = `Read-only: your API key may not change settings (${error.message}). ` +
      "A key with the admin scope can.";
    applyReadOnly();
  }
  if (error.status === 401 && !wasShown) $("#api-key").focus();
}

/** Ask the service who the key is: name it in the header, and go read-only without admin. */
async function checkIdentity() {
  let me;
  try {
    me = await api.whoami();
  } catch (error) {
    $("#identity").textContent = "";
    if (error.isAuth) showAuthProblem(error, "read");
    return;
  }
  $("#identity").textContent = me.auth === "open"
    ? "open service (no API keys)" : `key ${me.name}: ${me.scopes.join(", ")}`;
  state.readOnly = me.scopes.includes("admin") ? null
    : `Read-only: key '${me.name}' has the scopes ${me.scopes.join(", ")}; changing settings ` +
      "needs the admin scope.";
  applyReadOnly();
}

/** A read succeeded: a 401/403 banner about reading no longer holds. */
function readSucceeded() {
  const banner = $("#auth-banner");
  if (!banner.hidden && banner.dataset.action === "read") showAuthProblem(null);
}

function applyReadOnly() {
  document.body.classList.toggle("read-only", Boolean(state.readOnly));
  $("#mode").textContent = state.readOnly ? "read-only" : "";
  $("#mode").hidden = !state.readOnly;
  state.view?.settings?.setReadOnly(Boolean(state.readOnly), state.readOnly || "");
}

function showError(element, error) {
  if (!error) {
    element.hidden = true;
    readSucceeded();
    return;
  }
  element.hidden = false;
  element.textContent = error.status === 404 ? error.message
    : `Could not load: ${error.status ? `${error.status} ` : ""}${error.message}`;
  if (error.isAuth) showAuthProblem(error);
}

// -- routing and refresh ---------------------------------------------------------------------

function route() {
  const match = /^#\/exp\/(.+)$/.exec(location.hash);
  const next = match ? { kind: "experiment", id: decodeURIComponent(match[1]) }
    : { kind: location.hash === "#/layers" ? "layers" : "list" };
  if (state.view && state.view.kind === next.kind && state.view.id === next.id) return;
  state.view?.destroy?.();
  state.view = next.kind === "list" ? listView({ showError })
    : next.kind === "layers" ? layersView({ showError }) : experimentView(next.id);
  fill($("#main"), state.view.element);
  applyReadOnly();
  refreshNow();
}

async function refreshNow() {
  if (state.refreshing || !state.view) return;
  state.refreshing = true;
  const view = state.view;
  try {
    const ok = await view.refresh();
    const now = formatTime(Date.now() / 1000).slice(11);
    $("#last-refresh").textContent = ok ? `updated ${now}` : `update failed at ${now}`;
  } finally {
    state.refreshing = false;
  }
}

function tick() {
  if ($("#auto-refresh").checked && !document.hidden) refreshNow();
}

// -- one experiment -------------------------------------------------------------------------

function experimentView(id) {
  const data = { config: null, stats: null, samples: [], audit: null };
  const title = h("h1", { "data-testid": "experiment-title" }, id);
  const meta = h("span", { class: "meta", "data-testid": "experiment-meta" });
  const error = h("p", { class: "banner error", hidden: true, "data-testid": "experiment-error" });
  const winner = h("div", { class: "banner", "data-testid": "winner-banner", id: "winner-banner" });
  const flags = h("div", { class: "flags", "data-testid": "health-flags", id: "health-flags" });
  const legend = h("div", { class: "legend", id: "arm-legend", "data-testid": "arm-legend" });
  const allocationCanvas = h("canvas", { id: "allocation-plot", class: "plot",
    "data-testid": "allocation-plot" });
  const allocationTip = h("div", { class: "tooltip", hidden: true,
    "data-testid": "allocation-tooltip" });
  const allocationNote = h("p", { class: "caption", "data-testid": "allocation-caption" });
  // One time range for both time plots.
  const range = h("select", { "aria-label": "time range", "data-testid": "allocation-range",
    onchange: () => {
      drawAllocation();
      drawRewards();
      drawViolations();
      if (data.config && data.stats) {
        contextual.update(data.config, data.stats, data.samples, timeWindow());
      }
    } },
  [["3600", "last hour"], ["86400", "last day"], ["all", "all history"]]
    .map(([value, label]) => h("option", { value }, label)));
  const rewardCanvas = h("canvas", { id: "reward-plot", class: "plot",
    "data-testid": "reward-plot" });
  const rewardNote = h("p", { class: "caption", "data-testid": "reward-caption" });
  // With guardrails: each arm's P(violates a guardrail) over time (hidden otherwise).
  const violationCanvas = h("canvas", { id: "violation-plot", class: "plot",
    "data-testid": "violation-plot" });
  const violationNote = h("p", { class: "caption", "data-testid": "violation-caption" });
  const violationCard = h("section", { class: "card wide", "data-testid": "violation-card",
    hidden: true },
  h("div", { class: "card-head" }, h("h2", {}, "P(violates a guardrail) over time")),
  violationCanvas, violationNote);
  const liftCanvas = h("canvas", { id: "lift-plot", class: "plot intervals",
    "data-testid": "lift-plot" });
  const liftNote = h("p", { class: "caption", "data-testid": "lift-caption" });
  const posteriorCanvas = h("canvas", { id: "posterior-plot", class: "plot",
    "data-testid": "posterior-plot" });
  const posteriorNote = h("p", { class: "caption", "data-testid": "posterior-caption" });
  const statsBody = h("tbody");
  const shareHead = h("th", { class: "num", "data-testid": "share-head" }, "Share");
  const auditBody = h("tbody");
  const settings = new SettingsPanel(id, {
    onApplied: () => refreshNow(),
    onAuthError: (problem, action) => showAuthProblem(problem, action),
    notify,
  });
  // The policy (a fixed A/B test's weights) and the targeting rule.
  const serving = h("section", { class: "card", "data-testid": "serving" });
  let hover = null;
  // A contextual experiment's coefficients and allocation by segment (hidden otherwise).
  const contextual = contextualPanel({ colour: (arm) => colour(arm),
    arms: () => [...colours.keys()], tickCount });
  // Guardrail metrics beside the primary (hidden without guardrails).
  const guardrails = guardrailPanel({ colour: (arm) => colour(arm) });

  const element = h("div", { class: "experiment-view" },
    h("div", { class: "title-row" },
      h("a", { href: "#/", class: "back", "data-testid": "back-link" }, "← Experiments"),
      title, meta),
    error, winner, flags,
    h("div", { class: "plots" },
      h("section", { class: "card" },
        h("div", { class: "card-head" }, h("h2", {}, "Allocation over time"), range),
        h("div", { class: "plot-wrap" }, allocationCanvas, allocationTip), allocationNote),
      h("section", { class: "card" },
        h("div", { class: "card-head" }, h("h2", {}, "Mean reward over time")),
        rewardCanvas, rewardNote),
      violationCard,
      h("section", { class: "card" },
        h("div", { class: "card-head" }, h("h2", { "data-testid": "lift-title" }, "Lift")),
        liftCanvas, liftNote),
      h("section", { class: "card" },
        h("div", { class: "card-head" }, h("h2", {}, "Posterior of each arm's mean")),
        posteriorCanvas, posteriorNote)),
    legend, contextual.element,
    h("section", { class: "card" }, h("h2", {}, "Arms"),
      h("div", { class: "table-scroll" },
        h("table", { id: "stats-table", class: "table", "data-testid": "stats-table" },
          h("thead", {}, h("tr", {}, ["Arm", "State", "Observations", "Served", "Mean",
            "95% interval", "Lift [95% interval]", "P(best)", "Expected loss"]
            .map((label, i) => h("th", { class: i >= 2 ? "num" : "" }, label)), shareHead)),
          statsBody))),
    guardrails.element,
    serving, settings.element,
    h("section", { class: "card" }, h("h2", {}, "Audit log"),
      h("div", { class: "table-scroll" },
        h("table", { id: "audit-table", class: "table audit", "data-testid": "audit-table" },
          h("thead", {}, h("tr", {}, ["Version", "When", "Who", "Action", "Changes", "Reason"]
            .map((label) => h("th", {}, label)))), auditBody))));

  // Colours by name (arms named after a colour are drawn in it): the experiment's arms, then
  // any only the history knows.
  let colours = new Map();
  const colour = (arm) => colours.get(arm) || "#9ca3af";
  const updateColours = () => {
    const arms = data.config.arms.map((arm) => arm.id);
    for (const sample of data.samples) {
      for (const arm of sample.arms) if (!arms.includes(arm)) arms.push(arm);
    }
    colours = armColours(arms);
  };

  function renderHeader() {
    const { config } = data;
    fill(meta, h("span", { class: `badge ${config.status}`, "data-testid": "experiment-status" },
      config.status),
    ` ${config.reward} · ${config.arms.length} arms · version ${config.version}`,
    config.policy === "fixed" ? [" · ", h("span", { class: "badge fixed",
      "data-testid": "policy-badge" }, "fixed A/B test")] : null,
    config.model ? [" · ", h("span", { class: "badge contextual", "data-testid":
      "experiment-model", title: formatSetting(config.model.prior) }, "contextual"),
    ` ${config.model.dimension} columns: ` +
      config.model.features.map((feature) => feature.name).join(", ")]
      : ` · prior ${formatSetting(config.prior)}`,
    // Metadata, when the service has it.
    config.owner ? [" · owner ", h("span", { "data-testid": "experiment-owner" }, config.owner)]
      : null,
    (config.tags || []).map((tag) => [" ", h("span", { class: "tag", "data-tag": tag }, tag)]),
    config.hypothesis ? h("div", { class: "hypothesis", "data-testid": "experiment-hypothesis" },
      config.hypothesis) : null);
    fill(legend, config.arms.map((arm) => h("span", { "data-arm": arm.id,
      class: arm.state === "paused" ? "paused" : "" },
    h("i", { class: "swatch", style: `background:${colour(arm.id)}`,
      "data-colour": colour(arm.id) }), arm.id, arm.state === "paused" ? " (paused)" : "")));
  }

  /** Policy, a fixed test's weights and the targeting rule; a fixed test has no exploration
   * settings (the service refuses them), so it gets no settings form. */
  function renderServing() {
    const { config } = data;
    const fixed = config.policy === "fixed";
    settings.element.hidden = fixed;
    const weights = config.weights || {};
    const active = config.arms.filter((arm) => arm.state === "active");
    const total = active.reduce((sum, arm) => sum + (weights[arm.id] ?? 0), 0);
    const rule = config.targeting;
    fill(serving, h("h2", {}, fixed ? "Fixed weights" : "Serving"),
      h("p", {}, "Policy ", h("strong", { "data-testid": "experiment-policy" },
        config.policy || "thompson"), fixed
        ? [": an A/B test; each active arm is served in proportion to its weight, and " +
          "rewards do not move the allocation. Exploration settings do not apply to it; its " +
          "weights change by PATCH weights (", h("code", {}, `bandit experiments tune ${id} ` +
          "--weight ARM=W"), ")."]
        : ": the allocation follows the posteriors (the settings below)."),
      fixed ? h("div", { class: "table-scroll" },
        h("table", { class: "table", "data-testid": "weights-table" },
          h("thead", {}, h("tr", {}, h("th", {}, "Arm"), h("th", { class: "num" }, "Weight"),
            h("th", { class: "num" }, "Share"))),
          h("tbody", {}, config.arms.map((arm) => h("tr", { "data-arm": arm.id,
            class: arm.state === "paused" ? "paused" : "" },
          h("td", {}, h("i", { class: "swatch", style: `background:${colour(arm.id)}` }),
            arm.id, arm.state === "paused" ? " (paused)" : ""),
          h("td", { class: "num", "data-col": "weight" }, formatNumber(weights[arm.id] ?? 0)),
          h("td", { class: "num", "data-col": "share" }, arm.state === "active" && total > 0
            ? formatPercent((weights[arm.id] ?? 0) / total) : "—")))))) : null,
      h("p", {}, "Targeting ", rule
        ? h("code", { "data-testid": "experiment-targeting" }, targetingText(rule))
        : h("span", { class: "muted", "data-testid": "experiment-targeting" },
          "none: every unit of its layer's ranges is eligible")));
  }

  function renderStats() {
    const { stats } = data;
    // A contextual experiment allocates per context: its share is what was served.
    fill(shareHead, stats.model ? "Share (avg propensity)" : "Share");
    shareHead.title = stats.model ? "the average propensity of the arm over every decision " +
      "drawn since creation (each decision's own context)" : "current allocation probability";
    const leader = stats.arms.reduce((best, arm) =>
      ((arm.p_best ?? -1) > (best?.p_best ?? -1) ? arm : best), null);
    fill(statsBody, stats.arms.map((arm) => h("tr", { "data-arm": arm.arm,
      class: `${arm.state}${stats.winner?.arm === arm.arm ? " winner" : ""}` },
    h("td", { "data-col": "arm" }, h("i", { class: "swatch",
      style: `background:${colour(arm.arm)}` }), arm.arm,
    stats.winner?.arm === arm.arm ? h("span", { class: "badge won" }, "winner") : null),
    h("td", { "data-col": "state" }, h("span", { class: `badge ${arm.state}` }, arm.state)),
    h("td", { class: "num", "data-col": "n" }, formatCount(arm.n)),
    h("td", { class: "num", "data-col": "served" }, formatCount(arm.served)),
    h("td", { class: "num", "data-col": "mean", title: String(arm.mean) },
      formatNumber(arm.mean)),
    h("td", { class: "num", "data-col": "ci95" }, formatInterval(arm.ci95)),
    h("td", { class: "num", "data-col": "lift" }, arm.lift ? liftText(arm.lift)
      : h("span", { class: "muted" }, stats.control?.arm === arm.arm ? "control" : "—")),
    h("td", { class: "num", "data-col": "p_best" }, bar(arm.p_best, colour(arm.arm)),
      formatPercent(arm.p_best)),
    h("td", { class: "num", "data-col": "expected_loss", title: String(arm.expected_loss) },
      formatNumber(arm.expected_loss)),
    h("td", { class: "num", "data-col": "share" }, bar(arm.share, colour(arm.arm)),
      formatPercent(arm.share)))));

    if (stats.model) {
      winner.className = "banner neutral";
      fill(winner, h("strong", {}, "No winner call"),
        " — a contextual experiment's best arm depends on the context: see the coefficients " +
        "and the allocation by segment below (P(best) in the table compares the arms' mean " +
        "rewards over the contexts each was served in).");
    } else if (stats.winner) {
      const w = stats.winner;
      winner.className = "banner good";
      fill(winner, h("strong", {}, `Winner: ${w.arm}`), w.p_feasible === undefined
        ? ` — P(best) ${formatPercent(w.p_best)} ≥ ${formatPercent(w.threshold)} and expected ` +
          `loss ${formatNumber(w.expected_loss)} ≤ ${formatNumber(w.max_loss)}.`
        : ` — P(best feasible) ${formatPercent(w.p_best)} ≥ ${formatPercent(w.threshold)}, ` +
          `P(feasible) ${formatPercent(w.p_feasible)} ≥ ${formatPercent(w.threshold)} and ` +
          `expected loss ${formatNumber(w.expected_loss)} ≤ ${formatNumber(w.max_loss)}.`);
    } else if (stats.guardrails) {
      const rule = stats.call_rule;
      const best = stats.arms.reduce((top, arm) =>
        ((arm.p_best_feasible ?? -1) > (top?.p_best_feasible ?? -1) ? arm : top), null);
      winner.className = "banner neutral";
      fill(winner, h("strong", {}, "No winner yet"), best && best.p_best_feasible !== null
        ? ` — leader ${best.arm} with P(best feasible) ${formatPercent(best.p_best_feasible)}` +
          ` and P(feasible) ${formatPercent(1 - (best.p_violates ?? 0))}; a call needs both ` +
          `≥ ${formatPercent(rule.threshold)} and expected loss ≤ ${formatNumber(rule.max_loss)}.`
        : "");
    } else {
      const rule = stats.call_rule;
      winner.className = "banner neutral";
      fill(winner, h("strong", {}, "No winner yet"), leader && leader.p_best !== null
        ? ` — leader ${leader.arm} with P(best) ${formatPercent(leader.p_best)} and expected ` +
          `loss ${formatNumber(leader.expected_loss)}; a call needs P(best) ≥ ` +
          `${formatPercent(rule.threshold)} and expected loss ≤ ${formatNumber(rule.max_loss)}.`
        : "");
    }
    renderHealth(stats.health);
    guardrails.update(stats);
  }

  function renderHealth(health) {
    const chips = [];
    const ratio = health.sample_ratio;
    if (!ratio) {
      chips.push(chip("unknown", "sample-ratio", "Sample ratio: not enough history yet"));
    } else if (ratio.ok) {
      chips.push(chip("ok", "sample-ratio", "Sample ratio OK · p = " +
        `${formatNumber(ratio.p_value)} over ${formatCount(ratio.decisions)} decisions`));
    } else {
      chips.push(chip("bad", "sample-ratio", `Sample ratio mismatch · p = ` +
        `${formatNumber(ratio.p_value)}: served ${ratio.observed.map(formatCount).join(" / ")}` +
        ` where the propensities promised ${ratio.expected.map(formatCount).join(" / ")}`));
    }
    const rewards = health.rewards;
    if (!rewards) {
      chips.push(chip("unknown", "rewards", "Rewards: no history yet"));
    } else if (rewards.stalled) {
      chips.push(chip("bad", "rewards", `Rewards stalled · no new reward for ` +
        `${formatDuration(rewards.quiet_for_s)} while ${formatCount(rewards.decisions_since)} ` +
        "decisions were served"));
    } else if (rewards.observations === 0) {
      chips.push(chip("unknown", "rewards", "Rewards: none yet"));
    } else {
      chips.push(chip("ok", "rewards", `Rewards flowing · ${formatCount(rewards.observations)} ` +
        `observations, unchanged for ${formatDuration(rewards.quiet_for_s)}`));
    }
    fill(flags, chips);
  }

  function renderAudit() {
    const entries = [...data.audit.entries].reverse();
    fill(auditBody, entries.map((entry) => h("tr", { "data-version": entry.version },
      h("td", { class: "num", "data-col": "version" }, entry.version),
      h("td", { "data-col": "at", title: String(entry.at) }, formatTime(entry.at)),
      h("td", { "data-col": "actor" }, entry.actor),
      h("td", { "data-col": "action" }, h("span", { class: `badge ${entry.action}` },
        entry.action)),
      h("td", { "data-col": "changes" }, changeList(Object.entries(entry.changes)
        .map(([key, change]) => ({ key, ...(entry.action === "gate" ? gateChange(change)
          : change) })), entry.action === "create")),
      h("td", { "data-col": "reason" }, entry.reason ?? ""))));
  }

  /** The samples in the chosen time range, and the range (by each sample's own time: the
   * history is finer for the last hour than before it, so no spacing is assumed). */
  function timeWindow() {
    const { samples } = data;
    if (!samples.length) return null;
    const changes = (data.audit?.entries || []).map((entry) => entry.at);
    const end = Math.max(samples.at(-1).t, ...changes.filter((t) => t > samples.at(-1).t
      && t - samples.at(-1).t < 3600));
    const choice = range.value;
    const start = choice === "all" ? samples[0].t : end - Number(choice);
    const shown = samples.filter((s) => s.t >= start);
    if (!shown.length) return null;
    // A range longer than the history shows the history: it is an upper bound.
    let [low, high] = [Math.max(start, shown[0].t), end];
    if (high - low < 1) { low -= 0.5; high += 0.5; }
    return { shown, domain: [low, high] };
  }

  /** The audit log's setting changes in [low, high], as dashed lines labelled by version. */
  function changeMarkers([low, high]) {
    return (data.audit?.entries || [])
      .filter((entry) => entry.action !== "create" && entry.at >= low && entry.at <= high)
      .map((entry) => ({ x: entry.at, label: `v${entry.version}`, version: entry.version }));
  }

  /** Marks a time plot's setting changes on the canvas, for tests and tools. */
  function recordMarkers(canvas, markers, scales) {
    canvas.dataset.markers = JSON.stringify(markers.map((marker) => ({
      version: marker.version, x: Math.round(scales.xScale(marker.x)) })));
  }

  function seriesOf(shown, field) {
    return [...colours.keys()].map((arm) => ({
      arm, colour: colour(arm),
      points: shown.map((s) => {
        const i = s.arms.indexOf(arm);
        return [s.t, i < 0 ? NaN : s[field][i]];
      }).filter(([, value]) => Number.isFinite(value)),
    })).filter((series) => series.points.length);
  }

  function noHistory(canvas, note) {
    drawChart(canvas, { x: { domain: [0, 1], ticks: { ticks: [], format: String } },
      y: { domain: [0, 1] }, series: [], empty: data.samples.length
        ? "No samples in this time range." : "No history yet: a sample is taken every " +
          `${formatDuration(data.interval)} while decisions are served.` });
    canvas.dataset.markers = "[]";
    fill(note, "");
  }

  function spanText(shown) {
    return `${formatCount(shown.length)} samples over ` +
      `${formatDuration(shown.at(-1).t - shown[0].t)}; dashed lines: setting changes ` +
      "(audit log).";
  }

  function drawAllocation() {
    if (!data.config) return;
    const timed = timeWindow();
    if (!timed) {
      noHistory(allocationCanvas, allocationNote);
      allocationCanvas.plotted = null;
      return;
    }
    const [low, high] = timed.domain;
    const changes = changeMarkers(timed.domain);
    const markers = [...changes];
    if (hover !== null) markers.push({ x: hover, label: "", colour: "#c4c9d0" });
    allocationCanvas.scales = drawChart(allocationCanvas, {
      x: { domain: [low, high], ticks: timeTicks(low, high, tickCount(allocationCanvas)) },
      y: { domain: [0, 1], label: "allocation share", format: (v) => `${Math.round(v * 100)}%` },
      series: seriesOf(timed.shown, "plotShare"), markers,
    });
    recordMarkers(allocationCanvas, changes, allocationCanvas.scales);
    allocationCanvas.plotted = timed;
    fill(allocationNote, data.config.model ? "Contextual: each arm's average propensity over " +
      "the decisions of each history interval (every decision has its context's own). " : "",
    spanText(timed.shown));
  }

  function drawRewards() {
    if (!data.config) return;
    const timed = timeWindow();
    if (!timed) {
      noHistory(rewardCanvas, rewardNote);
      return;
    }
    const [low, high] = timed.domain;
    const series = seriesOf(timed.shown, "mean");
    const bands = [...colours.keys()].map((arm) => ({
      colour: withAlpha(colour(arm), 0.13),
      points: timed.shown.map((s) => {
        const i = s.arms.indexOf(arm);
        return i < 0 ? [s.t, NaN, NaN] : [s.t, s.ci_low[i], s.ci_high[i]];
      }),
    }));
    const values = timed.shown.flatMap((s) => [...s.ci_low, ...s.ci_high])
      .filter(Number.isFinite);
    let [bottom, top] = values.length ? [Math.min(...values), Math.max(...values)] : [0, 1];
    const pad = (top - bottom) * 0.05 || 0.05;
    [bottom, top] = [bottom - pad, top + pad];
    if (data.config.reward === "bernoulli") [bottom, top] = [Math.max(0, bottom), Math.min(1, top)];
    const changes = changeMarkers(timed.domain);
    const scales = drawChart(rewardCanvas, {
      x: { domain: [low, high], ticks: timeTicks(low, high, tickCount(rewardCanvas)) },
      y: { domain: [bottom, top], label: data.config.reward === "bernoulli" ? "reward rate"
        : "mean reward" },
      series, bands, markers: changes,
    });
    recordMarkers(rewardCanvas, changes, scales);
    fill(rewardNote, "Each arm's posterior mean of all its rewards so far, with its 95% " +
      `interval as a band. ${spanText(timed.shown)}`);
  }

  /** Each arm's P(violates a guardrail) at every history sample, the gate's thresholds as
   * dashed lines, and the stretches the gate held an arm as a thick band under its line. */
  function drawViolations() {
    violationCard.hidden = !data.stats?.guardrails;
    if (violationCard.hidden || !data.config) return;
    const timed = timeWindow();
    if (!timed) {
      noHistory(violationCanvas, violationNote);
      Object.assign(violationCanvas.dataset, { rules: "[]", arms: "[]", held: "[]" });
      return;
    }
    const [low, high] = timed.domain;
    const { series, held, lines } = violationSeries(timed.shown, [...colours.keys()], colour,
      withAlpha);
    const percent = (v) => `${Math.round(v * 100)}%`;
    const rules = [{ y: GATE_ON, label: `${percent(GATE_ON)}: the gate holds the arm` },
      { y: GATE_OFF, label: `${percent(GATE_OFF)}: the gate releases it` }];
    const changes = changeMarkers(timed.domain);
    const scales = drawChart(violationCanvas, {
      x: { domain: [low, high], ticks: timeTicks(low, high, tickCount(violationCanvas)) },
      y: { domain: [0, 1], label: "P(violates a guardrail)", format: percent },
      series, rules, markers: changes,
    });
    recordMarkers(violationCanvas, changes, scales);
    // For tests and tools: where the thresholds were drawn, the arms drawn, the held stretches.
    violationCanvas.dataset.rules = JSON.stringify(rules.map((rule) => ({
      y: rule.y, label: rule.label, px: Math.round(scales.yScale(rule.y)) })));
    violationCanvas.dataset.arms = JSON.stringify(lines.map((line) => line.arm));
    violationCanvas.dataset.held = JSON.stringify(held.map((stretch) => ({ arm: stretch.arm,
      from: stretch.points[0][0], to: stretch.points.at(-1)[0] })));
    const control = data.stats.guardrails.control;
    const gate = data.stats.guardrails.gate_min_samples === null
      ? "The hard gate is off: the horizontal dashed lines mark where it would hold an arm " +
        "at the floor and release it. "
      : "Horizontal dashed lines: the hard gate holds an arm at the floor from " +
        `${percent(GATE_ON)} (once it has ${formatCount(data.stats.guardrails.gate_min_samples)}` +
        ` observations of every metric) until it falls below ${percent(GATE_OFF)}; a thick ` +
        "band under an arm's line marks the samples where it held the arm. ";
    fill(violationNote, "Each arm's probability of breaking any guardrail" +
      `${control ? ` (none for the control, ${control}, always feasible)` : ""}. ${gate}` +
      `${formatCount(timed.shown.length)} samples over ` +
      `${formatDuration(timed.shown.at(-1).t - timed.shown[0].t)}; vertical dashed lines: ` +
      "changes in the audit log.");
  }

  function drawLift() {
    const { stats } = data;
    if (!stats) return;
    const relative = stats.arms.every((arm) => !arm.lift || arm.lift.kind === "relative");
    // A row per arm, up to MAX_LIFT_ROWS: then the control and the arms with the best means.
    let shown = stats.arms;
    if (shown.length > MAX_LIFT_ROWS) {
      const best = [...shown].sort((a, b) => (b.mean ?? -Infinity) - (a.mean ?? -Infinity))
        .slice(0, MAX_LIFT_ROWS - (stats.control ? 1 : 0)).map((arm) => arm.arm);
      shown = shown.filter((arm) => best.includes(arm.arm) || arm.arm === stats.control?.arm);
    }
    const rows = shown.map((arm) => ({
      label: arm.arm, colour: colour(arm.arm),
      mean: arm.lift?.mean, low: arm.lift?.ci95[0], high: arm.lift?.ci95[1],
      note: stats.control?.arm === arm.arm ? "control" : "no lift",
    }));
    const percent = (v) => `${Math.round(v * 1000) / 10}%`;
    drawIntervals(liftCanvas, { rows, format: relative ? percent : undefined,
      label: relative ? "relative lift of the mean" : "difference of the means" });
    const control = stats.control;
    liftCanvas.dataset.control = control ? control.arm : "";
    fill(liftNote, shown.length < stats.arms.length
      ? `${shown.length} of ${stats.arms.length} arms (the best means). ` : "", control
      ? `Reference: ${control.arm} (${control.chosen_by === "setting"
        ? "the control setting's arm" : "named control"}). Each arm's lift of the mean against ` +
        "it, with its 95% interval from posterior draws."
      : "Reference: no control arm, so each arm is compared with the best other active arm " +
        "(the leader with the runner-up). 95% intervals from posterior draws.");
  }

  function hoverAllocation(event) {
    const { scales, plotted } = allocationCanvas;
    if (!scales || !plotted) return;
    const rect = allocationCanvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    if (x < scales.plot.left || x > scales.plot.right) { leaveAllocation(); return; }
    const [low, high] = scales.xDomain;
    const { left, right } = scales.plot;
    const t = low + ((x - left) / (right - left)) * (high - low);
    const nearest = plotted.shown.reduce((best, s) =>
      (Math.abs(s.t - t) < Math.abs(best.t - t) ? s : best));
    hover = nearest.t;
    drawAllocation();
    fill(allocationTip, h("strong", {}, formatTime(nearest.t)), ` · v${nearest.version}`,
      nearest.arms.map((arm, i) => h("div", {}, h("i", { class: "swatch",
        style: `background:${colour(arm)}` }), `${arm}: ${formatPercent(nearest.plotShare[i])}`,
      h("span", { class: "muted" }, ` (n ${formatCount(nearest.n[i])})`))));
    allocationTip.hidden = false;
    const tipAt = scales.xScale(nearest.t);
    allocationTip.style.left = `${Math.max(0, Math.min(tipAt + 12, rect.width - 190))}px`;
  }

  function leaveAllocation() {
    hover = null;
    allocationTip.hidden = true;
    drawAllocation();
  }

  allocationCanvas.addEventListener("mousemove", hoverAllocation);
  allocationCanvas.addEventListener("mouseleave", leaveAllocation);

  function drawPosteriors() {
    const { config, stats } = data;
    if (!config || !stats) return;
    const forgetting = config.exploration.half_life_s !== null;
    const densities = stats.arms.map((arm) => ({
      arm, density: posteriorDensity(config.reward, config.prior, forgetting, arm),
    })).filter((d) => d.density);
    if (!densities.length) {
      drawChart(posteriorCanvas, { x: { domain: [0, 1] }, y: { domain: [0, 1] }, series: [],
        empty: "No posterior to draw." });
      return;
    }
    let low = Math.min(...densities.map((d) => d.density.support[0]));
    let high = Math.max(...densities.map((d) => d.density.support[1]));
    if (!(high > low)) { low -= 0.5; high += 0.5; }
    const series = densities.map(({ arm, density }) => {
      // Each curve on its own fine grid over its support, so a narrow peak is not missed.
      const [from, to] = density.support;
      const points = [];
      for (let i = 0; i <= 240; i++) {
        const x = from + ((to - from) * i) / 240;
        points.push([x, density.pdf(x)]);
      }
      return { arm, points, colour: colour(arm.arm), fill: withAlpha(colour(arm.arm), 0.12),
        dash: arm.state === "paused" ? [5, 4] : [] };
    });
    const top = Math.max(...series.flatMap((s) => s.points.map(([, y]) => y))
      .filter(Number.isFinite));
    drawChart(posteriorCanvas, {
      x: { domain: [low, high], label: config.reward === "bernoulli" ? "mean reward (rate)"
        : "mean reward" },
      y: { domain: [0, top * 1.08 || 1], label: "density" },
      series,
    });
    const kinds = new Set(densities.map((d) => d.density.kind));
    const method = [];
    if (kinds.has("beta")) method.push("exact Beta posteriors (prior + observations)");
    if (kinds.has("beta-fitted")) method.push("Beta posteriors with the mean and 95% interval " +
      "of /stats (forgetting decays the evidence below n)");
    if (kinds.has("student-t")) method.push("exact Student-t posteriors of the mean " +
      "(Normal-Gamma, ν = 2α₀ + n)");
    if (kinds.has("normal-approx")) method.push("normal approximations from the mean and 95% " +
      "interval (exact parameters are not reported with forgetting)");
    fill(posteriorNote, `Drawn as ${method.join("; ")}. Dashed: paused. `,
      h("span", { class: "muted" }, densities.map((d) => `${d.arm.arm} ${d.density.label}`)
        .join(" · ")));
    posteriorCanvas.dataset.kinds = [...kinds].join(" ");
  }

  async function refresh() {
    try {
      const since = data.samples.length ? data.samples.at(-1).t : 0;
      const [config, stats, history, audit] = await Promise.all([
        api.show(id), api.stats(id), api.history(id, since), api.audit(id)]);
      if (state.view?.id !== id) return false; // the operator moved on meanwhile
      data.config = config;
      data.stats = stats;
      data.audit = audit;
      data.interval = history.interval_s;
      const fresh = history.samples.filter((s) => !data.samples.length
        || s.t > data.samples.at(-1).t);
      const known = data.samples.length;
      data.samples = data.samples.concat(fresh);
      annotateShares(data.samples, known);
      data.samples = data.samples.slice(-MAX_SAMPLES);
      showError(error, null);
      updateColours();
      renderHeader();
      renderServing();
      renderStats();
      renderAudit();
      drawAllocation();
      drawRewards();
      drawViolations();
      drawLift();
      drawPosteriors();
      contextual.update(config, stats, data.samples, timeWindow());
      settings.update(config);
      return true;
    } catch (problem) {
      if (state.view?.id === id) showError(error, problem);
      return false;
    }
  }

  return {
    kind: "experiment", id, element, settings, refresh,
    destroy: () => settings.destroy(),
    resize() {
      drawAllocation();
      drawRewards();
      drawViolations();
      drawLift();
      drawPosteriors();
      contextual.draw();
      settings.drawForecastPlots();
    },
  };
}

/** A targeting rule on one line: "(country in [DE, FR] and app_version semver_gte 2.3.0) or
 * beta eq true" (an OR of ANDs). */
function targetingText(rule) {
  // Values as JSON: "true" (a string) and true (a boolean) are different rules.
  const condition = (c) => `${c.attribute} ${c.op} ${"values" in c
    ? `[${c.values.map((v) => JSON.stringify(v)).join(", ")}]` : JSON.stringify(c.value)}`;
  const alternatives = rule.any.map((branch) => branch.all.map(condition).join(" and "));
  return alternatives.length === 1 ? alternatives[0]
    : alternatives.map((text) => (text.includes(" and ") ? `(${text})` : text)).join(" or ");
}

/** The hard gate's change (arms held before and after) with "none" for no arm. */
function gateChange(change) {
  const arms = (list) => (Array.isArray(list) && list.length ? list.join(", ") : "none");
  return { old: arms(change.old), new: arms(change.new) };
}

/** About one time tick per 90 px of plot, so clock labels never overlap. */
function tickCount(canvas) {
  return Math.max(2, Math.min(6, Math.floor((canvas.clientWidth - 70) / 90)));
}

function bar(value, colour) {
  const width = Number.isFinite(value) ? Math.max(0, Math.min(1, value)) * 100 : 0;
  return h("span", { class: "bar" }, h("span", { style: `width:${width}%;background:${colour}` }));
}

// -- start ---------------------------------------------------------------------------------

setupHeader();
checkIdentity();
// The settings form's bounds and words are the service's own (its OpenAPI document).
loadRules(await api.openapi());
window.addEventListener("hashchange", route);
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => state.view?.resize?.(), 100);
});
document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
setInterval(tick, REFRESH_MS);
route();
