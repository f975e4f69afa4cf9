// Small DOM and formatting helpers shared by the views.

/** h("td", {class: "num", "data-col": "n"}, "4,000"): an element; on* attributes listen. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else if (name === "style") {
      // Through the CSSOM: the Content-Security-Policy refuses style attributes.
      element.style.cssText = value;
    } else if (name in element && !name.includes("-") && typeof value !== "string") {
      element[name] = value; // properties such as value, checked, disabled, hidden
    } else {
      element.setAttribute(name, value === true ? "" : value);
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of ``element``. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** 4 significant digits (scientific notation when very large or small); "—" for null. */
export function formatNumber(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e6 || magnitude < 1e-4) return value.toExponential(3);
  return Number(value.toPrecision(4)).toString();
}

/** Whole counts with thousands separators; fractional (forgotten) counts with one decimal. */
export function formatCount(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  const digits = Number.isInteger(value) ? 0 : 1;
  return value.toLocaleString("en-US", { minimumFractionDigits: digits,
    maximumFractionDigits: digits });
}

/** A probability as a percentage with one decimal; "<0.1%" and ">99.9%" at the ends. */
export function formatPercent(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  if (value > 0 && value < 0.0005) return "<0.1%";
  if (value < 1 && value > 0.9995) return ">99.9%";
  return `${(value * 100).toFixed(1)}%`;
}

export function formatInterval(interval, format = formatNumber) {
  if (!interval) return "—";
  return `[${format(interval[0])}, ${format(interval[1])}]`;
}

export function formatTime(epochSeconds) {
  const date = new Date(epochSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/**
 * A setting's value as the audit log and the confirmation show it: numbers as JavaScript
 * prints them, null as "none", objects as "name=value" lists, arm lists as their ids.
 */
export function formatSetting(value) {
  if (value === null || value === undefined) return "none";
  if (Array.isArray(value)) {
    return value.map((item) => (item && typeof item === "object" && "id" in item
      ? (item.state && item.state !== "active" ? `${item.id} (${item.state})` : item.id)
      : formatSetting(item))).join(", ");
  }
  if (typeof value === "object") {
    return Object.entries(value).map(([key, item]) => `${key}=${formatSetting(item)}`)
      .join(", ");
  }
  return String(value);
}

/** A health flag: kind ok, bad or unknown; ``name`` says which check. */
export function chip(kind, name, text) {
  return h("span", { class: `chip ${kind}`, "data-flag": name, "data-state": kind }, text);
}

/**
 * A lift as "+12.3% [−1.0%, +25.9%]" (relative) or "+0.5 [−0.1, +1.2]" (absolute), green when
 * its interval is above 0, red when below; ``withReference`` adds "vs <arm>".
 */
export function liftText(lift, withReference = false) {
  if (!lift) return h("span", { class: "muted" }, "—");
  const format = lift.kind === "relative" ? formatLiftPercent : formatSigned;
  const sure = lift.ci95[0] > 0 ? "up" : lift.ci95[1] < 0 ? "down" : "";
  return h("span", { class: `lift ${sure}`, "data-kind": lift.kind,
    title: `P(better than ${lift.against}) ${formatPercent(lift.p_better)}` },
  h("strong", {}, format(lift.mean)), ` [${format(lift.ci95[0])}, ${format(lift.ci95[1])}]`,
  withReference ? h("span", { class: "muted" }, ` vs ${lift.against}`) : null);
}

function formatLiftPercent(value) {
  const percent = value * 100;
  const digits = Math.abs(percent) >= 100 ? 0 : 1;
  return `${percent > 0 ? "+" : percent < 0 ? "−" : ""}${Math.abs(percent).toFixed(digits)}%`;
}

function formatSigned(value) {
  const text = formatNumber(Math.abs(value));
  return `${value > 0 ? "+" : value < 0 ? "−" : ""}${text}`;
}

/** "5 min ago", "3 h ago", "12 d ago". */
export function formatAge(epochSeconds) {
  const seconds = Math.max(0, Date.now() / 1000 - epochSeconds);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400 * 2) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}
