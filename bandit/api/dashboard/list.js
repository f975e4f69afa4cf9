// The experiment list: each experiment at a glance (GET /v1/experiments?summary=true), with
// the ones that need attention named above the table.

import { api } from "./api.js";
import { chip, fill, formatAge, formatCount, formatPercent, formatTime, h, liftText }
  from "./dom.js";
import { formatDuration } from "./plots.js";

/** The list view; ``showError(element, error)`` reports a failed read (null: it worked). */
export function listView({ showError }) {
  const body = h("tbody");
  const error = h("p", { class: "banner error", hidden: true, "data-testid": "list-error" });
  const attention = h("div", { class: "banner attention", hidden: true,
    "data-testid": "attention" });
  const filter = h("input", { type: "search", placeholder: "filter by id, owner or tag",
    "aria-label": "filter experiments", "data-testid": "list-filter", oninput: () => render() });
  const count = h("span", { class: "muted" });
  let experiments = null;
  let more = false;
  const matches = (e, wanted) => !wanted || e.id.includes(wanted)
    || (e.owner || "").toLowerCase().includes(wanted)
    || (e.tags || []).some((tag) => tag.toLowerCase().includes(wanted));
  const render = () => {
    if (!experiments) return;
    const wanted = filter.value.trim().toLowerCase();
    const shown = experiments.filter((e) => matches(e, wanted));
    count.textContent = more ? `the first ${experiments.length} experiments (by id)`
      : `${experiments.length} experiment${experiments.length === 1 ? "" : "s"}`;
    renderAttention(attention, experiments);
    fill(body, shown.length ? shown.map(listRow)
      : h("tr", {}, h("td", { colspan: LIST_COLUMNS.length, class: "muted" }, experiments.length
        ? "No experiment matches the filter." : "No experiments yet. Create one with " +
          "POST /v1/experiments or `bandit experiments create`.")));
  };
  const element = h("div", { class: "list-view" },
    h("div", { class: "title-row" }, h("h1", {}, "Experiments"), count,
      h("a", { href: "#/layers", "data-testid": "layers-link" }, "Layers"), filter), error,
    attention,
    h("section", { class: "card" },
      h("div", { class: "table-scroll" },
        h("table", { id: "experiment-list", class: "table list", "data-testid": "experiment-list" },
          h("thead", {}, h("tr", {}, LIST_COLUMNS.map(([label, numeric, help]) =>
            h("th", { class: numeric ? "num" : "", title: help }, label)))), body)),
      h("p", { class: "caption" }, "Leader: the arm most likely best (P(best)). Lift: the " +
        "leader's mean against the control's (or, without a control, the runner-up's), with " +
        "its 95% interval. Decisions, 1 h: served in the last hour.")));
  return {
    kind: "list", element,
    async refresh() {
      try {
        const page = await api.list();
        experiments = page.experiments;
        more = page.next !== null;
        showError(error, null);
        render();
        return true;
      } catch (problem) {
        showError(error, problem);
        return false;
      }
    },
  };
}

const LIST_COLUMNS = [
  ["Experiment"], ["Health"], ["Leader", false, "the arm with the highest P(best)"],
  ["Winner"], ["Lift of the leader", false, "against the control (else the runner-up), " +
    "95% interval"], ["Decisions, 1 h", true, "decisions served in the last hour"],
  ["Created"], ["Changed", false, "last configuration change"],
];

/** What is wrong with an experiment, as flags: [name, text] pairs (none when all is well). */
function problemsOf(e) {
  const health = e.summary?.health;
  if (!health || e.status !== "active") return [];
  const problems = [];
  if (health.sample_ratio_ok === false) problems.push(["sample-ratio", "sample ratio mismatch"]);
  if (health.rewards_stalled === true) problems.push(["rewards", "rewards stalled"]);
  return problems;
}

function renderAttention(banner, experiments) {
  const troubled = experiments.map((e) => [e, problemsOf(e)]).filter(([, p]) => p.length);
  banner.hidden = !troubled.length;
  fill(banner, h("strong", {}, `${troubled.length} experiment` +
    `${troubled.length === 1 ? " needs" : "s need"} attention: `),
  troubled.map(([e, problems], i) => [i ? ", " : "", h("a", {
    href: `#/exp/${encodeURIComponent(e.id)}`, "data-id": e.id }, e.id),
  ` (${problems.map(([, text]) => text).join(", ")})`]));
}

function listRow(e) {
  const summary = e.summary;
  const problems = problemsOf(e);
  const tags = e.tags || [];
  return h("tr", { "data-id": e.id, class: problems.length ? "problem" : "" },
    h("td", { "data-col": "id" }, h("a", { href: `#/exp/${encodeURIComponent(e.id)}` }, e.id),
      " ", h("span", { class: `badge ${e.status}`, "data-col": "status" }, e.status),
      h("div", { class: "muted small" }, h("span", { "data-col": "reward" }, e.reward), " · ",
        h("span", { "data-col": "arms" }, e.arms), " arms · v",
        h("span", { "data-col": "version" }, e.version)),
      e.owner || tags.length ? h("div", { class: "owner-tags" },
        e.owner ? h("span", { class: "owner", "data-col": "owner" }, e.owner) : null,
        tags.map((tag) => h("span", { class: "tag", "data-tag": tag }, tag))) : null),
    h("td", { "data-col": "health" }, healthChips(e)),
    h("td", { "data-col": "leader" }, summary?.leader ? [summary.leader.arm,
      h("span", { class: "muted" }, ` ${formatPercent(summary.leader.p_best)}`)] : "—"),
    h("td", { "data-col": "winner" }, summary?.winner
      ? h("span", { class: "badge won" }, summary.winner) : h("span", { class: "muted" }, "none")),
    h("td", { "data-col": "lift", class: "nowrap" }, liftText(summary?.lift, true)),
    h("td", { class: "num", "data-col": "traffic" }, trafficText(summary?.traffic_last_hour)),
    h("td", { "data-col": "created", title: e.created_at ? formatTime(e.created_at) : null },
      e.created_at ? formatAge(e.created_at) : "—"),
    h("td", { "data-col": "changed", title: e.updated_at ? formatTime(e.updated_at) : null },
      e.updated_at ? formatAge(e.updated_at) : "—"));
}

function healthChips(e) {
  const health = e.summary?.health;
  if (!health || e.status !== "active") return h("span", { class: "muted" }, "—");
  const problems = problemsOf(e);
  if (problems.length) {
    return problems.map(([name, text]) => chip("bad", name, text));
  }
  // OK only when both checks ran and passed; one not run yet is said as such.
  if (health.sample_ratio_ok === true && health.rewards_stalled === false) {
    return chip("ok", "health", "OK");
  }
  if (health.sample_ratio_ok === null && health.rewards_stalled === null) {
    return chip("unknown", "health", "no history yet");
  }
  return chip("unknown", "health", health.sample_ratio_ok === null
    ? "rewards OK · sample ratio not checked yet" : "sample ratio OK · rewards not checked yet");
}

function trafficText(traffic) {
  if (!traffic) return h("span", { class: "muted", title: "the history does not reach back " +
    "an hour" }, "—");
  return h("span", { title: `over the last ${formatDuration(traffic.seconds)}` },
    formatCount(traffic.decisions));
}

