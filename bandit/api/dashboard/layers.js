// The layers (#/layers): for each layer a bar of its 10,000 buckets, a segment per range of an
// experiment (linked to the experiment's page) and the free ranges, which get the default;
// then each experiment's ranges and share, and the layer's audit log (GET /v1/layers and
// GET /v1/layers/<id>/audit).

import { api } from "./api.js";
import { fill, formatCount, formatPercent, formatTime, h } from "./dom.js";
import { armColours } from "./plots.js";

const BUCKETS = 10000;
const FREE_COLOUR = "#e5e7eb";
// A segment narrower than this share of the bar shows no label (its title still names it).
const LABEL_MIN = 0.06;

/** The layers view; ``showError(element, error)`` reports a failed read (null: it worked). */
export function layersView({ showError }) {
  const error = h("p", { class: "banner error", hidden: true, "data-testid": "layers-error" });
  const count = h("span", { class: "muted", "data-testid": "layers-count" });
  const list = h("div", { class: "layers", "data-testid": "layers" });
  const element = h("div", { class: "layers-view" },
    h("div", { class: "title-row" },
      h("a", { href: "#/", class: "back", "data-testid": "back-link" }, "← Experiments"),
      h("h1", {}, "Layers"), count),
    error,
    h("p", { class: "caption" }, "A layer splits the traffic into 10,000 buckets by a hash of " +
      "its salt and the unit id: each experiment owns its ranges, and a unit in a free bucket " +
      "(or failing the experiment's targeting) gets the layer's default. An experiment's " +
      "share is the part of the units it sees."),
    list);
  const audited = new Map();
  return {
    kind: "layers", element,
    async refresh() {
      try {
        const { layers } = await api.layers();
        // A layer's audit log changes only with its version: read again only then (not one
        // request per layer on every refresh).
        const audits = await Promise.all(layers.map(async (layer) => {
          const known = audited.get(layer.id);
          if (known && known.version === layer.version) return known.audit;
          const audit = await api.layerAudit(layer.id);
          audited.set(layer.id, { version: layer.version, audit });
          return audit;
        }));
        showError(error, null);
        count.textContent = `${layers.length} layer${layers.length === 1 ? "" : "s"}`;
        fill(list, layers.length ? layers.map((layer, i) => layerCard(layer, audits[i]))
          : h("p", { class: "muted", "data-testid": "no-layers" }, "No layers yet. Create " +
            "one with POST /v1/layers or `bandit layers create`."));
        return true;
      } catch (problem) {
        showError(error, problem);
        return false;
      }
    },
  };
}

/** "[0, 2000)": buckets 0 to 1999, as the API writes a range. */
function rangeText([start, end]) {
  return `[${start}, ${end})`;
}

const buckets = (ranges) => ranges.reduce((sum, [start, end]) => sum + end - start, 0);
const experimentLink = (id, ...children) =>
  h("a", { href: `#/exp/${encodeURIComponent(id)}`, "data-experiment": id }, children);

function layerCard(layer, audit) {
  const experiments = Object.keys(layer.ranges);
  const colours = armColours(experiments);
  const defaultText = layer.default ?? "none";
  return h("section", { class: "card layer", "data-layer": layer.id },
    h("div", { class: "card-head" },
      h("h2", {}, layer.id),
      h("span", { class: "muted" }, "version ", h("span", { "data-col": "version" },
        layer.version), " · salt ", h("code", { "data-col": "salt" }, layer.salt),
      " · default ", h("span", { "data-col": "default" }, defaultText))),
    layerBar(layer, colours),
    h("div", { class: "bar-scale", "aria-hidden": "true" },
      h("span", {}, "0"), h("span", {}, "5,000"), h("span", {}, "10,000")),
    h("div", { class: "table-scroll" },
      h("table", { class: "table", "data-testid": "layer-ranges" },
        h("thead", {}, h("tr", {}, h("th", {}, "Experiment"), h("th", {}, "Ranges"),
          h("th", { class: "num" }, "Buckets"), h("th", { class: "num" }, "Share"))),
        h("tbody", {},
          experiments.map((id) => h("tr", { "data-experiment": id },
            h("td", {}, h("i", { class: "swatch", style: `background:${colours.get(id)}` }),
              experimentLink(id, id)),
            h("td", { "data-col": "ranges" }, layer.ranges[id].map(rangeText).join(", ")),
            h("td", { class: "num", "data-col": "buckets" }, formatCount(buckets(layer.ranges[id]))),
            h("td", { class: "num", "data-col": "share" }, formatPercent(layer.shares[id])))),
          h("tr", { class: "free", "data-free": "" },
            h("td", {}, h("i", { class: "swatch", style: `background:${FREE_COLOUR}` }),
              "free → default ", h("strong", {}, defaultText)),
            h("td", { "data-col": "ranges" }, layer.free.map(rangeText).join(", ") || "none"),
            h("td", { class: "num", "data-col": "buckets" }, formatCount(buckets(layer.free))),
            h("td", { class: "num", "data-col": "share" },
              formatPercent(buckets(layer.free) / BUCKETS)))))),
    h("details", { class: "layer-audit", open: true },
      h("summary", {}, `Audit log (${audit.entries.length})`),
      h("div", { class: "table-scroll" },
        h("table", { class: "table audit", "data-testid": "layer-audit" },
          h("thead", {}, h("tr", {}, ["Version", "When", "Who", "Action", "Changes", "Reason"]
            .map((label) => h("th", {}, label)))),
          h("tbody", {}, [...audit.entries].reverse().map((entry) => auditRow(entry)))))));
}

/** The 10,000 buckets as a bar: a segment per range of an experiment and per free range. */
function layerBar(layer, colours) {
  const segments = [
    ...Object.entries(layer.ranges).flatMap(([id, ranges]) =>
      ranges.map((range) => ({ id, range }))),
    ...layer.free.map((range) => ({ id: null, range })),
  ].sort((a, b) => a.range[0] - b.range[0]);
  return h("div", { class: "layer-bar", "data-testid": "layer-bar" }, segments.map(({ id, range }) => {
    const [start, end] = range;
    const width = (end - start) / BUCKETS;
    const where = `${rangeText(range)}: ${formatCount(end - start)} buckets`;
    const style = `left:${(start / BUCKETS) * 100}%;width:${width * 100}%;` +
      `background:${id === null ? FREE_COLOUR : colours.get(id)}`;
    if (id === null) {
      return h("span", { class: "segment free", style, "data-free": "", "data-start": start,
        "data-end": end, title: `free ${where}, default ${layer.default ?? "none"}` },
      width >= LABEL_MIN ? layer.default ?? "" : "");
    }
    const share = formatPercent(layer.shares[id]);
    return h("a", { class: "segment", style, href: `#/exp/${encodeURIComponent(id)}`,
      "data-experiment": id, "data-start": start, "data-end": end,
      "data-colour": colours.get(id), title: `${id} ${where} (the experiment: ${share})` },
    width >= LABEL_MIN ? [h("strong", {}, id), ` ${share}`] : "");
  }));
}

function changeText(key, value) {
  if (value === null || value === undefined) return "none";
  if (key.startsWith("ranges.")) return value.map(rangeText).join(", ");
  return String(value);
}

function auditRow(entry) {
  const created = entry.action === "create";
  return h("tr", { "data-version": entry.version },
    h("td", { class: "num", "data-col": "version" }, entry.version),
    h("td", { "data-col": "at", title: String(entry.at) }, formatTime(entry.at)),
    h("td", { "data-col": "actor" }, entry.actor),
    h("td", { "data-col": "action" }, h("span", { class: `badge ${entry.action}` },
      entry.action)),
    h("td", { "data-col": "changes" }, h("ul", { class: "changes" },
      Object.entries(entry.changes).map(([key, change]) => h("li", { "data-key": key },
        h("code", { class: "key" }, key), " ",
        created ? null : [h("span", { class: "old" }, changeText(key, change.old)), " → "],
        h("span", { class: "new" }, changeText(key, change.new)))))),
    h("td", { "data-col": "reason" }, entry.reason ?? ""));
}
