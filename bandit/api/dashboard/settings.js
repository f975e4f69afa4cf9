// The settings panel of one experiment: a form with every exploration setting and the arms,
// validated as the service validates; "Forecast" asks the advisor (POST .../advise) what the
// change would do; "Apply" asks for confirmation and sends the PATCH with the version the
// forecast was based on. Auto refresh calls update(config): the operator's edits are kept.

import { api } from "./api.js";
import { $, fill, formatCount, formatInterval, formatNumber, formatPercent, formatSetting, h }
  from "./dom.js";
import { armColours, drawChart, durationTicks, formatDuration, withAlpha } from "./plots.js";
import { EXPLORATION_FIELDS, FORECAST_FIELDS, buildProposal, forecastOptions, inputText }
  from "./validate.js";

const CURRENT_COLOUR = "#6b7280";
const PROPOSED_COLOUR = "#111827";

export class SettingsPanel {
  /**
   * callbacks: onApplied() reloads the experiment; onAuthError(error, action) reports a 401/403;
   * notify(message) shows a passing message.
   */
  constructor(experimentId, callbacks) {
    this.id = experimentId;
    this.callbacks = callbacks;
    this.base = null; // the configuration the form compares with (and the forecast is of)
    this.forecast = null; // {response, key}: the last forecast and the proposal it was for
    this.forecastFailed = false;
    this.needsTraffic = false; // the advisor asked for a traffic rate
    this.readOnly = false;
    this.busy = false;
    this.build();
  }

  build() {
    this.inputs = {};
    const fields = EXPLORATION_FIELDS.map((field) => {
      const input = h("input", {
        id: `setting-${field.name}`, name: field.name, type: "text", inputmode: "decimal",
        autocomplete: "off", "data-testid": `setting-${field.name}`,
        placeholder: field.nullable || "", "aria-describedby": `help-${field.name}`,
      });
      this.inputs[field.name] = input;
      return this.field(field.name, field.label, input, field.help, rangeText(field));
    });
    this.controlArm = h("select", { id: "setting-control-arm",
      "data-testid": "setting-control-arm" });
    this.controlShare = h("input", { id: "setting-control-share", type: "text",
      inputmode: "decimal", autocomplete: "off", placeholder: "share",
      "data-testid": "setting-control-share" });
    const control = h("div", { class: "field field-wide", "data-field": "control" },
      h("label", { for: "setting-control-arm" }, "Control / holdout"),
      h("div", { class: "inline" }, this.controlArm,
        h("label", { for: "setting-control-share", class: "sub" }, "share"), this.controlShare),
      h("small", { class: "help" }, "a fixed share kept on one arm; share in (0, 1)"),
      h("span", { class: "field-error", "data-testid": "error-control" }));

    this.armBody = h("tbody");
    this.addInput = h("input", { id: "setting-add-arms", type: "text", autocomplete: "off",
      placeholder: "new-arm, other-arm", "data-testid": "setting-add-arms" });
    const arms = h("div", { class: "arms-editor" },
      h("table", { class: "arm-states", "data-testid": "arm-states" },
        h("thead", {}, h("tr", {}, h("th", {}, "Arm"), h("th", {}, "State"))), this.armBody),
      h("div", { class: "field", "data-field": "add" },
        h("label", { for: "setting-add-arms" }, "Add arms"), this.addInput,
        h("small", { class: "help" }, "ids separated by commas; new arms start active"),
        h("span", { class: "field-error", "data-testid": "error-add" })),
      h("span", { class: "field-error", "data-testid": "error-arms" }));

    this.forecastInputs = {};
    const optionFields = FORECAST_FIELDS.map((field) => {
      const input = h("input", { id: `forecast-${field.name}`, type: "text",
        inputmode: "decimal", autocomplete: "off", placeholder: "default",
        "data-testid": `forecast-${field.name}` });
      this.forecastInputs[field.name] = input;
      return h("div", { class: "field", "data-field": `forecast-${field.name}` },
        h("label", { for: input.id }, field.label), input,
        h("small", { class: "help" }, field.help),
        h("span", { class: "field-error", "data-testid": `error-forecast-${field.name}` }));
    });
    this.options = h("details", { class: "forecast-options", "data-testid": "forecast-options" },
      h("summary", {}, "Forecast assumptions"), h("div", { class: "grid" }, optionFields));

    this.changesBox = h("div", { class: "pending-changes", "data-testid": "pending-changes" });
    this.errorsBox = h("ul", { class: "form-errors", role: "alert",
      "data-testid": "settings-errors" });
    this.serverError = h("p", { class: "server-error", role: "alert", hidden: true,
      "data-testid": "settings-server-error" });
    this.forecastButton = h("button", { type: "submit", class: "primary",
      "data-testid": "forecast-button" }, "Forecast");
    this.resetButton = h("button", { type: "button", "data-testid": "reset-button",
      onclick: () => this.reset() }, "Reset");
    this.applyWithoutButton = h("button", { type: "button", hidden: true,
      "data-testid": "apply-without-forecast", onclick: () => this.confirm(false) },
    "Apply without forecast…");
    // The advisor answers 422 for a contextual experiment (it has no contexts to replay yet).
    this.noForecastNote = h("small", { class: "muted", hidden: true,
      "data-testid": "no-forecast" }, "The tuning advisor cannot forecast a contextual " +
      "experiment yet: changes are applied without a forecast.");
    this.fieldset = h("fieldset", {},
      h("div", { class: "grid" }, fields, control), arms, this.options, this.changesBox,
      this.errorsBox, this.serverError,
      h("div", { class: "actions" }, this.forecastButton, this.resetButton,
        this.applyWithoutButton, this.noForecastNote));
    this.form = h("form", { id: "settings-form", novalidate: true, autocomplete: "off",
      "data-testid": "settings-form",
      onsubmit: (event) => { event.preventDefault(); this.runForecast(); },
      oninput: () => this.changed(), onchange: () => this.changed() }, this.fieldset);
    this.notice = h("p", { class: "notice", hidden: true, "data-testid": "settings-notice" });
    this.readOnlyNotice = h("p", { class: "notice warn", hidden: true,
      "data-testid": "read-only-notice" });
    this.forecastBox = h("div", { class: "forecast", hidden: true, "data-testid": "forecast" });
    this.element = h("section", { class: "card", id: "settings", "data-testid": "settings" },
      h("h2", {}, "Settings"), this.readOnlyNotice, this.notice, this.form, this.forecastBox);
    this.dialog = this.buildDialog();
    document.body.append(this.dialog);
  }

  field(name, label, input, help, range) {
    return h("div", { class: "field", "data-field": name },
      h("label", { for: input.id }, label), input,
      h("small", { class: "help", id: `help-${name}` }, help, range ? ` · ${range}` : ""),
      h("span", { class: "field-error", "data-testid": `error-${name}` }));
  }

  destroy() {
    this.dialog.remove();
  }

  // -- the configuration the form is based on ------------------------------------------------

  /** A (possibly newer) configuration: fields the operator has not edited follow it. */
  update(config) {
    if (this.base && config.version === this.base.version) return;
    const old = this.base;
    this.base = config;
    let kept = false;
    for (const field of EXPLORATION_FIELDS) {
      const input = this.inputs[field.name];
      const fresh = inputText(config.exploration[field.name]);
      // Before the first configuration the fields are empty: anything in them was typed.
      const untouched = old ? input.value.trim() === inputText(old.exploration[field.name])
        : input.value.trim() === "";
      if (untouched) {
        input.value = fresh;
      } else if (input.value.trim() !== fresh) {
        kept = true;
      }
    }
    const oldControl = old ? controlTexts(old.exploration.control) : null;
    const newControl = controlTexts(config.exploration.control);
    const armChoice = this.controlArm.value;
    fill(this.controlArm, h("option", { value: "" }, "none"),
      config.arms.map((arm) => h("option", { value: arm.id },
        arm.state === "paused" ? `${arm.id} (paused)` : arm.id)));
    if (!old || (armChoice === oldControl.arm
        && this.controlShare.value.trim() === oldControl.share)) {
      this.controlArm.value = newControl.arm;
      this.controlShare.value = newControl.share;
    } else {
      this.controlArm.value = armChoice;
      kept = kept || armChoice !== newControl.arm
        || this.controlShare.value.trim() !== newControl.share;
    }
    const choices = Object.fromEntries(Object.entries(this.armSelects || {})
      .map(([arm, select]) => [arm, select.value]));
    const oldStates = Object.fromEntries((old?.arms || []).map((arm) => [arm.id, arm.state]));
    this.armSelects = {};
    const colours = armColours(config.arms.map((arm) => arm.id));
    fill(this.armBody, config.arms.map((arm) => {
      const select = h("select", { "data-arm": arm.id, "data-testid": `arm-state-${arm.id}`,
        "aria-label": `state of ${arm.id}` },
      h("option", { value: "active" }, "active"), h("option", { value: "paused" }, "paused"));
      const edited = arm.id in choices && choices[arm.id] !== oldStates[arm.id];
      select.value = edited ? choices[arm.id] : arm.state;
      kept = kept || (edited && choices[arm.id] !== arm.state);
      this.armSelects[arm.id] = select;
      return h("tr", {}, h("td", {}, swatch(colours.get(arm.id)), arm.id), h("td", {}, select));
    }));
    this.contextual = Boolean(config.model);
    this.noForecastNote.hidden = !this.contextual;
    this.options.hidden = this.contextual;
    this.forecastButton.hidden = this.contextual;
    const archived = config.status === "archived";
    this.fieldset.disabled = this.readOnly || archived;
    if (old) {
      if (this.forecast) {
        this.forecast = null;
        this.forecastBox.hidden = true;
      }
      this.showNotice(kept
        ? `Someone changed this experiment: it is now at version ${config.version}. Settings ` +
          "you had not edited show the new values; your edits are kept. Forecast again."
        : "");
    }
    if (archived) this.showNotice("This experiment is archived: its settings cannot change.");
    this.changed();
  }

  reset() {
    const config = this.base;
    this.base = null;
    this.armSelects = {};
    this.addInput.value = "";
    for (const input of Object.values(this.inputs)) input.value = "";
    this.update(config);
    this.forecast = null;
    this.forecastBox.hidden = true;
    this.showServerError("");
    this.showNotice("");
  }

  setReadOnly(readOnly, message) {
    this.readOnly = readOnly;
    this.fieldset.disabled = readOnly || this.base?.status === "archived";
    this.readOnlyNotice.hidden = !readOnly;
    this.readOnlyNotice.textContent = readOnly ? message : "";
    this.form.hidden = readOnly;
    if (readOnly) this.forecastBox.hidden = true;
  }

  showNotice(message) {
    this.notice.hidden = !message;
    this.notice.textContent = message;
  }

  showServerError(message) {
    this.serverError.hidden = !message;
    this.serverError.textContent = message;
  }

  // -- what the form asks for ----------------------------------------------------------------

  formTexts() {
    return {
      exploration: Object.fromEntries(Object.entries(this.inputs)
        .map(([name, input]) => [name, input.value])),
      control: { arm: this.controlArm.value, share: this.controlShare.value },
      armStates: Object.fromEntries(Object.entries(this.armSelects)
        .map(([arm, select]) => [arm, select.value])),
      add: this.addInput.value,
    };
  }

  proposal() {
    return buildProposal(this.base, this.formTexts());
  }

  /** After every keystroke: the pending changes, the errors, and whether a forecast is stale. */
  changed() {
    if (!this.base) return;
    const { body, changes, errors } = this.proposal();
    const options = forecastOptions(this.forecastTexts());
    for (const element of this.form.querySelectorAll(".field-error")) element.textContent = "";
    for (const element of this.form.querySelectorAll(".field.invalid")) {
      element.classList.remove("invalid");
    }
    const allErrors = [...errors, ...options.errors.map((e) => ({ ...e,
      field: `forecast-${e.field}` }))];
    for (const error of allErrors) {
      const box = this.form.querySelector(`[data-testid="error-${error.field}"]`);
      if (box) box.textContent = error.message;
      box?.closest(".field")?.classList.add("invalid");
    }
    if (this.forecastInputs.traffic_per_s.value.trim()) this.needsTraffic = false;
    if (this.needsTraffic) {
      const box = this.form.querySelector("[data-testid=error-forecast-traffic_per_s]");
      box.textContent = "The service measured no traffic yet: enter the decisions per second " +
        "you expect.";
      box.closest(".field").classList.add("invalid");
    }
    fill(this.errorsBox, allErrors.map((error) => h("li", {}, error.message)));
    for (const [name, input] of Object.entries(this.inputs)) {
      const field = input.closest(".field");
      field.classList.toggle("edited",
        changes.some((change) => change.key === `exploration.${name}`));
    }
    fill(this.changesBox, changes.length
      ? [h("strong", {}, "Pending changes: "), changeList(changes)]
      : h("span", { class: "muted" }, "No changes yet: edit a setting to forecast its effect."));
    this.forecastButton.disabled = this.busy || allErrors.length > 0 || changes.length === 0;
    this.resetButton.disabled = changes.length === 0 && !this.addInput.value;
    this.applyWithoutButton.hidden = !(this.forecastFailed || this.contextual)
      || changes.length === 0 || allErrors.length > 0;
    if (this.forecast) {
      const stale = JSON.stringify(body) !== this.forecast.key;
      this.forecastBox.classList.toggle("stale", stale);
      const apply = $("[data-testid=apply-button]", this.forecastBox);
      if (apply) apply.disabled = stale || this.busy;
      const staleNote = $("[data-testid=forecast-stale]", this.forecastBox);
      if (staleNote) staleNote.hidden = !stale;
    }
  }

  forecastTexts() {
    return Object.fromEntries(Object.entries(this.forecastInputs)
      .map(([name, input]) => [name, input.value]));
  }

  setBusy(busy) {
    this.busy = busy;
    this.element.classList.toggle("busy", busy);
    this.changed();
  }

  // -- forecast --------------------------------------------------------------------------------

  async runForecast() {
    const { body, changes, errors } = this.proposal();
    const options = forecastOptions(this.forecastTexts());
    if (errors.length || options.errors.length || !changes.length || this.busy) return;
    if (this.contextual) { // Enter in a field submits the form: no forecast to run
      this.confirm(false);
      return;
    }
    this.showServerError("");
    this.forecastButton.textContent = "Forecasting…";
    this.setBusy(true);
    try {
      const response = await api.advise(this.id, { ...body, ...options.values });
      this.forecast = { response, key: JSON.stringify(body) };
      this.forecastFailed = false;
      this.renderForecast();
    } catch (error) {
      this.forecast = null;
      this.forecastBox.hidden = true;
      if (error.isAuth) {
        this.callbacks.onAuthError(error, "forecast");
      } else if (error.status === 422) {
        this.showServerError(`The service refused the proposal: ${error.message}`);
        if (/^traffic_per_s/.test(error.message)) {
          this.options.open = true;
          this.needsTraffic = true;
        }
      } else {
        this.forecastFailed = true;
        this.showServerError(`Forecast unavailable (${error.status || "no answer"}: ` +
          `${error.message}). You can still apply the change without a forecast.`);
      }
    } finally {
      this.forecastButton.textContent = "Forecast";
      this.setBusy(false);
      if (this.needsTraffic) this.forecastInputs.traffic_per_s.focus();
    }
  }

  colourOf(arm, arms) {
    return armColours([...this.base.arms.map((a) => a.id), ...arms]).get(arm);
  }

  renderForecast() {
    const forecast = this.forecast.response;
    const { assumptions: a, current, proposed, difference } = forecast;
    const row = (name, label, show) => h("tr", { "data-row": name }, h("th", {}, label),
      h("td", { "data-scenario": "current" }, show(current)),
      h("td", { "data-scenario": "proposed" }, show(proposed)));
    const regretText = (s) => [formatNumber(s.regret.mean), " ",
      h("small", {}, `95% CI ${formatInterval(s.regret.ci95)} · 80% of runs `,
        formatInterval(s.regret.range80))];
    const callTime = (s) => {
      const call = s.winner_call;
      if (!call.seconds) return "no call within the horizon";
      return [formatDuration(call.seconds.median), " ",
        h("small", {}, `80%: ${formatDuration(call.seconds.range80[0])}–` +
          `${formatDuration(call.seconds.range80[1])}`),
        call.decisions ? h("div", { class: "muted" },
          `${formatCount(Math.round(call.decisions.median))} decisions`) : null];
    };
    const table = h("table", { class: "forecast-table", "data-testid": "forecast-table" },
      h("thead", {}, h("tr", {}, h("th", {}), h("th", {}, "Current settings"),
        h("th", {}, "Proposed"))),
      h("tbody", {},
        row("regret", "Expected regret", regretText),
        row("best-arm-rate", "Decisions on the best arm",
          (s) => [formatPercent(s.best_arm_rate.mean), " ",
            h("small", {}, `95% CI ${formatInterval(s.best_arm_rate.ci95, formatPercent)}`)]),
        row("winner-call", "Winner called",
          (s) => [formatPercent(s.winner_call.probability), " ",
            h("small", {}, `95% CI ${formatInterval(s.winner_call.ci95, formatPercent)}`)]),
        row("winner-time", "Time to the call", callTime),
        row("winner-correct", "Called arm is truly best",
          (s) => formatPercent(s.winner_call.correct))));
    const better = difference.p_proposed_better;
    const delta = difference.regret;
    const verdict = h("p", { class: `verdict ${better >= 0.5 ? "good" : "bad"}`,
      "data-testid": "forecast-verdict" },
    h("strong", {}, `P(proposed better) ${formatPercent(better)}`), " · regret difference ",
    "(proposed − current) ", h("strong", {}, formatNumber(delta.mean)), ` 95% CI `,
    formatInterval(delta.ci95));
    const horizon = `${formatCount(a.decisions)} decisions (${formatDuration(a.horizon_s)} at ` +
      `${formatNumber(a.traffic_per_s)} decisions/s, ${a.traffic_source})`;
    const assumptions = h("p", { class: "assumptions", "data-testid": "forecast-assumptions" },
      `Simulated over the next ${horizon}; rewards arrive after ` +
      `${formatDuration(a.reward_delay_s)} (${a.delay_source}); posteriors updated every ` +
      `${formatCount(a.update_every)} decisions; ${formatCount(a.reps)} runs per scenario, ` +
      `seed ${a.seed}; a winner is called at P(best) ≥ ${formatPercent(a.threshold)} with ` +
      `expected loss ≤ ${formatNumber(a.max_loss)}. Regret: expected reward lost against ` +
      "always serving the truly best arm, in reward units.");
    const notes = (a.notes || []).length
      ? h("ul", { class: "notes" }, a.notes.map((note) => h("li", {}, note))) : null;
    this.regretCanvas = h("canvas", { id: "forecast-regret-plot", class: "plot small",
      "data-testid": "forecast-regret-plot" });
    this.sharesCanvas = h("canvas", { id: "forecast-shares-plot", class: "plot small",
      "data-testid": "forecast-shares-plot" });
    const legend = h("div", { class: "legend" },
      h("span", {}, h("i", { class: "line dashed", style: `border-color:${CURRENT_COLOUR}` }),
        "current"),
      h("span", {}, h("i", { class: "line", style: `border-color:${PROPOSED_COLOUR}` }),
        "proposed"),
      forecast.arms.map((arm) => h("span", {}, swatch(this.colourOf(arm, forecast.arms)), arm)));
    const apply = h("button", { type: "button", class: "primary", "data-testid": "apply-button",
      onclick: () => this.confirm(true) }, "Apply…");
    fill(this.forecastBox,
      h("h3", {}, `Forecast for this change (based on version ${forecast.version})`),
      h("p", { class: "notice warn", hidden: true, "data-testid": "forecast-stale" },
        "The form changed since this forecast: forecast again before applying."),
      changeList(changeEntries(forecast.changes)), verdict, table,
      h("div", { class: "forecast-plots" },
        h("figure", {}, h("figcaption", {}, "Expected regret (mean, 80% band)"),
          this.regretCanvas),
        h("figure", {}, h("figcaption", {}, "Allocation share per arm (mean, proposed band)"),
          this.sharesCanvas)),
      legend, assumptions, notes, h("div", { class: "actions" }, apply));
    this.forecastBox.hidden = false;
    this.forecastBox.classList.remove("stale");
    this.drawForecastPlots();
    this.changed();
  }

  drawForecastPlots() {
    if (!this.forecast || this.forecastBox.hidden) return;
    const forecast = this.forecast.response;
    const seconds = forecast.checkpoints.seconds;
    const x = { domain: [0, Math.max(...seconds) || 1], label: "time from now" };
    x.ticks = durationTicks(x.domain[0], x.domain[1], 5);
    const curve = (scenario) => scenario.regret_curve;
    const highest = Math.max(...curve(forecast.current).high, ...curve(forecast.proposed).high,
      ...curve(forecast.current).mean, ...curve(forecast.proposed).mean);
    const series = (values) => seconds.map((t, i) => [t, values[i]]);
    const band = (c) => seconds.map((t, i) => [t, c.low[i], c.high[i]]);
    drawChart(this.regretCanvas, {
      x, y: { domain: [0, highest > 0 ? highest * 1.05 : 1], label: "regret" },
      bands: [{ colour: withAlpha(CURRENT_COLOUR, 0.15), points: band(curve(forecast.current)) },
        { colour: withAlpha(PROPOSED_COLOUR, 0.15), points: band(curve(forecast.proposed)) }],
      series: [
        { colour: CURRENT_COLOUR, dash: [6, 4], points: series(curve(forecast.current).mean) },
        { colour: PROPOSED_COLOUR, points: series(curve(forecast.proposed).mean) }],
    });
    const shareSeries = [];
    const shareBands = [];
    for (const arm of forecast.arms) {
      const colour = this.colourOf(arm, forecast.arms);
      const current = forecast.current.shares[arm];
      const proposed = forecast.proposed.shares[arm];
      if (current) shareSeries.push({ colour, dash: [6, 4], width: 1.5,
        points: series(current.mean) });
      if (proposed) {
        shareBands.push({ colour: withAlpha(colour, 0.15), points: band(proposed) });
        shareSeries.push({ colour, points: series(proposed.mean) });
      }
    }
    drawChart(this.sharesCanvas, {
      x, y: { domain: [0, 1], label: "share", format: (v) => `${Math.round(v * 100)}%` },
      bands: shareBands, series: shareSeries,
    });
  }

  // -- apply -----------------------------------------------------------------------------------

  buildDialog() {
    this.dialogChanges = h("div", { "data-testid": "confirm-changes" });
    this.dialogVersion = h("p", { class: "muted" });
    this.dialogWarning = h("p", { class: "notice warn", hidden: true });
    this.reason = h("textarea", { id: "confirm-reason", maxlength: "1000", rows: "3",
      placeholder: "why this change (recorded in the audit log)",
      "data-testid": "confirm-reason" });
    this.dialogError = h("p", { class: "server-error", role: "alert", hidden: true,
      "data-testid": "confirm-error" });
    this.confirmButton = h("button", { type: "button", class: "primary danger",
      "data-testid": "confirm-apply", onclick: () => this.apply() }, "Apply change");
    return h("dialog", { id: "confirm-dialog", "data-testid": "confirm-dialog",
      "aria-labelledby": "confirm-title" },
    h("h2", { id: "confirm-title" }, `Apply this change to ${this.id}?`),
    this.dialogVersion, this.dialogChanges, this.dialogWarning,
    h("label", { for: "confirm-reason" }, "Reason (optional)"), this.reason, this.dialogError,
    h("div", { class: "actions" },
      h("button", { type: "button", "data-testid": "confirm-cancel",
        onclick: () => this.dialog.close() }, "Cancel"),
      this.confirmButton));
  }

  confirm(withForecast) {
    const { body, changes, errors } = this.proposal();
    if (errors.length || !changes.length || this.readOnly) return;
    const forecast = withForecast ? this.forecast?.response : null;
    this.pending = { body, version: forecast ? forecast.version : this.base.version };
    fill(this.dialogVersion, `Based on version ${this.pending.version}. `,
      "If the experiment changed since, nothing is applied and you are told.");
    fill(this.dialogChanges, changeList(forecast ? changeEntries(forecast.changes) : changes));
    this.dialogWarning.hidden = Boolean(forecast);
    this.dialogWarning.textContent = forecast ? "" : this.contextual
      ? "No forecast: the advisor does not forecast contextual experiments yet, so the effect " +
        "of this change is unknown."
      : "No forecast: the advisor did not answer, so the effect of this change is unknown.";
    this.dialogError.hidden = true;
    this.confirmButton.disabled = false;
    this.dialog.showModal();
    this.reason.focus();
  }

  async apply() {
    const reason = this.reason.value.trim();
    const body = { version: this.pending.version, ...this.pending.body };
    if (reason) body.reason = reason;
    this.confirmButton.disabled = true;
    try {
      const result = await api.patch(this.id, body);
      this.dialog.close();
      this.reason.value = "";
      this.forecast = null;
      this.forecastFailed = false;
      this.forecastBox.hidden = true;
      this.showServerError("");
      this.base = null;
      this.armSelects = {};
      this.addInput.value = "";
      this.update(result);
      this.showNotice("");
      this.callbacks.notify(`Applied: ${this.id} is now at version ${result.version}.`);
      this.callbacks.onApplied();
    } catch (error) {
      if (error.status === 409) {
        this.dialog.close();
        this.forecast = null;
        this.forecastBox.hidden = true;
        this.showServerError("Someone else changed this experiment after your forecast, so " +
          `nothing was applied (${error.message}). The settings were reloaded: check your ` +
          "change against them and forecast again.");
        this.callbacks.onApplied();
      } else if (error.isAuth) {
        this.dialog.close();
        this.callbacks.onAuthError(error, "apply");
      } else {
        this.dialogError.hidden = false;
        this.dialogError.textContent = `The service refused the change (${error.status || "no " +
          "answer"}): ${error.message}`;
        this.confirmButton.disabled = false;
      }
    }
  }
}

function controlTexts(control) {
  return control ? { arm: control.arm, share: inputText(control.share) } : { arm: "", share: "" };
}

function rangeText(field) {
  const low = `${field.lowOpen ? "(" : "["}${field.low}`;
  const high = `${field.high >= 1e6 ? field.high.toExponential(0) : field.high}` +
    `${field.highOpen ? ")" : "]"}`;
  return `${low}, ${high}${field.integer ? ", whole" : ""}`;
}

function swatch(colour) {
  return h("i", { class: "swatch", style: `background:${colour}`, "data-colour": colour });
}

/** The service's {key: {old, new}} as a list. */
function changeEntries(changes) {
  return Object.entries(changes || {}).map(([key, change]) => ({ key, ...change }));
}

/** Changes as "key old → new" lines; ``created``: only the new values (a create entry). */
export function changeList(changes, created = false) {
  return h("ul", { class: "changes" }, changes.map((change) => h("li",
    { "data-key": change.key },
    h("code", { class: "key" }, change.key), " ",
    created ? null : [h("span", { class: "old" }, change.old === null
      && change.key.startsWith("arms.") ? "(new arm)" : formatSetting(change.old)), " → "],
    h("span", { class: "new" }, formatSetting(change.new)))));
}
