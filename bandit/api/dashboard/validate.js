// The settings form's rules: the same checks, bounds and messages as the service's
// bandit/model.py (parse_exploration, _apply_arm_changes, check_consistent), so an operator
// learns what is wrong before anything is sent. The service checks again; its 422 message is
// always shown too.

// The rules come from the service's OpenAPI document (loadRules), where the service writes
// each setting's bounds and words from its one declaration (bandit/model.py): nothing here is
// a copy that could drift from it.

/** Arm ids, the most arms an experiment may have, and the exploration settings in form
 *  order with their bounds: set by loadRules before any form is built. */
export let ID_PATTERN = /^$/;
export let MAX_ARMS = 0;
export let EXPLORATION_FIELDS = [];
let CONTROL_SHARE = null;

/** The form's rules from GET /openapi.json. */
export function loadRules(openapi) {
  const schemas = openapi.components.schemas;
  ID_PATTERN = new RegExp(schemas.NewExperiment.properties.id.pattern);
  MAX_ARMS = schemas.NewExperiment.properties.arms.maxItems;
  const settings = schemas.ExperimentChange.properties.exploration.properties;
  EXPLORATION_FIELDS = Object.entries(settings).filter(([name]) => name !== "control")
    .map(([name, schema]) => field(name, schema));
  const control = settings.control.anyOf.find((choice) => choice.type === "object");
  CONTROL_SHARE = field("share", control.properties.share);
}

function field(name, schema) {
  const types = [].concat(schema.type);
  const nullable = types.includes("null") ? schema["x-null"] : undefined;
  const meaning = (schema.description || "").replace(/; null = .*$/, "");
  return {
    name, label: schema.title,
    low: schema.minimum ?? schema.exclusiveMinimum, lowOpen: "exclusiveMinimum" in schema,
    high: schema.maximum ?? schema.exclusiveMaximum, highOpen: "exclusiveMaximum" in schema,
    integer: types.includes("integer"), nullable,
    help: nullable ? `${meaning}; empty = ${nullable}` : meaning,
  };
}

/** How a setting's value is written into its input ("" for null). */
export function inputText(value) {
  return value === null || value === undefined ? "" : String(value);
}

function bound(value) {
  return Number.isInteger(value) ? value.toFixed(1) : String(value); // as Python prints floats
}

/** A number from an input's text, within a field's bounds: {value} or {error}. */
export function parseNumber(text, field, what) {
  const raw = text.trim();
  if (raw === "") {
    if (field.nullable) return { value: null };
    return { error: `${what}: required (a number)` };
  }
  const value = Number(raw);
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(raw) || !Number.isFinite(value)) {
    return { error: `${what}: expected a number, got '${raw}'` };
  }
  if (field.integer) {
    if (!Number.isInteger(value)) return { error: `${what}: expected an integer, got ${raw}` };
    if (value < field.low || value > field.high) {
      return { error: `${what}: must be between ${field.low} and ${field.high}, got ${raw}` };
    }
    return { value };
  }
  if (value < field.low || (field.lowOpen && value === field.low)) {
    return { error: `${what}: must be ${field.lowOpen ? ">" : ">="} ${bound(field.low)}, ` +
      `got ${raw}` };
  }
  if (value > field.high || (field.highOpen && value === field.high)) {
    return { error: `${what}: must be ${field.highOpen ? "<" : "<="} ${bound(field.high)}, ` +
      `got ${raw}` };
  }
  return { value };
}

/**
 * What the form asks for, checked against ``config`` (GET /v1/experiments/{id}).
 *
 * form: {exploration: {name: text}, control: {arm: "" | id, share: text},
 *        armStates: {id: "active" | "paused"}, add: "ids, separated by commas or spaces"}
 * Returns {body: {exploration?, arms?} (only what changes), changes: [{key, old, new}],
 *          errors: [{field, message}]}.
 */
export function buildProposal(config, form) {
  const errors = [];
  const fail = (field, message) => errors.push({ field, message });
  const current = config.exploration;
  const exploration = { ...current };
  for (const field of EXPLORATION_FIELDS) {
    const parsed = parseNumber(form.exploration[field.name] ?? "", field,
      `exploration.${field.name}`);
    if (parsed.error) fail(field.name, parsed.error);
    else exploration[field.name] = parsed.value;
  }
  if (form.control.arm) {
    const parsed = parseNumber(form.control.share, CONTROL_SHARE, "exploration.control.share");
    if (parsed.error) fail("control", parsed.error);
    else exploration.control = { arm: form.control.arm, share: parsed.value };
  } else {
    exploration.control = null;
  }

  const arms = config.arms.map((arm) => arm.id);
  const added = form.add.split(/[\s,]+/).filter(Boolean);
  added.forEach((arm, i) => {
    if (!ID_PATTERN.test(arm)) {
      fail("add", `arms.add[${i}]: '${arm}' does not match the pattern [a-z0-9][a-z0-9_.-]{0,63}`);
    }
  });
  const duplicates = [...new Set(added.filter((arm, i) => added.indexOf(arm) !== i))];
  if (duplicates.length) fail("add", `arms.add: duplicate arm ids ${pyList(duplicates)}`);
  const existing = added.filter((arm) => arms.includes(arm));
  if (existing.length) fail("add", `arms.add: ${pyList(existing)} already exist`);
  if (arms.length + added.length > MAX_ARMS) {
    fail("add", `arms.add: an experiment has at most ${MAX_ARMS} arms`);
  }
  const pause = [];
  const resume = [];
  for (const arm of config.arms) {
    const wanted = form.armStates[arm.id] || arm.state;
    if (wanted !== arm.state) (wanted === "paused" ? pause : resume).push(arm.id);
  }

  const changes = [];
  const body = {};
  const changedExploration = {};
  for (const name of Object.keys(current)) {
    if (!sameValue(current[name], exploration[name])) {
      changedExploration[name] = exploration[name];
      changes.push({ key: `exploration.${name}`, old: current[name], new: exploration[name] });
    }
  }
  if (Object.keys(changedExploration).length) body.exploration = changedExploration;
  const armChanges = {};
  if (added.length) armChanges.add = added;
  if (pause.length) armChanges.pause = pause;
  if (resume.length) armChanges.resume = resume;
  if (Object.keys(armChanges).length) body.arms = armChanges;
  for (const arm of added) changes.push({ key: `arms.${arm}`, old: null, new: "active" });
  for (const arm of pause) changes.push({ key: `arms.${arm}`, old: "active", new: "paused" });
  for (const arm of resume) changes.push({ key: `arms.${arm}`, old: "paused", new: "active" });
  changes.sort((a, b) => (a.key < b.key ? -1 : 1));

  if (!errors.length) {
    const paused = new Set(config.arms.filter((a) => a.state === "paused").map((a) => a.id));
    pause.forEach((arm) => paused.add(arm));
    resume.forEach((arm) => paused.delete(arm));
    const allArms = [...arms, ...added];
    for (const message of consistencyErrors(exploration, allArms, paused)) {
      fail(message.field, message.message);
    }
  }
  return { body, changes, errors };
}

/** check_consistent of bandit/model.py: rules that involve several settings and the arms. */
export function consistencyErrors(exploration, arms, paused) {
  const active = arms.filter((arm) => !paused.has(arm));
  if (!active.length) {
    return [{ field: "arms", message: "arms: at least one arm must stay active" }];
  }
  let controlShare = 0;
  let banditArms = active.length;
  const control = exploration.control;
  if (control) {
    if (!arms.includes(control.arm)) {
      return [{ field: "control", message:
        `exploration.control.arm: '${control.arm}' is not an arm` }];
    }
    if (paused.has(control.arm)) {
      return [{ field: "control", message:
        `exploration.control.arm: '${control.arm}' is paused` }];
    }
    controlShare = control.share;
    banditArms -= 1;
    if (banditArms < 1) {
      return [{ field: "control", message:
        "exploration.control: no active arm is left besides the control" }];
    }
  }
  const { min_share: minShare, max_share: maxShare } = exploration;
  if (minShare > maxShare) {
    return [{ field: "min_share", message:
      `exploration: min_share ${bound(minShare)} is above max_share ${bound(maxShare)}` }];
  }
  const free = 1 - controlShare;
  if (minShare * banditArms > free + 1e-12) {
    return [{ field: "min_share", message: `exploration.min_share: ${bound(minShare)} * ` +
      `${banditArms} active arms > ${shortNumber(free)} (the share left after the control)` }];
  }
  if (maxShare * banditArms < free - 1e-12) {
    return [{ field: "max_share", message: `exploration.max_share: ${bound(maxShare)} * ` +
      `${banditArms} active arms < ${shortNumber(free)}: the caps cannot add up to the traffic` }];
  }
  return [];
}

function shortNumber(value) {
  return Number(value.toPrecision(6)).toString(); // Python's {:g}
}

function pyList(items) {
  return `[${items.map((item) => `'${item}'`).join(", ")}]`;
}

function sameValue(a, b) {
  if (a && b && typeof a === "object" && typeof b === "object") {
    return a.arm === b.arm && a.share === b.share;
  }
  return a === b;
}

/** The forecast's assumptions (empty = the service's default): {values} or {errors}. */
export const FORECAST_FIELDS = [
  { name: "decisions", label: "Horizon (decisions)", integer: true, low: 10, high: 1e6,
    help: "empty = an hour of traffic" },
  { name: "traffic_per_s", label: "Traffic (decisions/s)", low: 1e-6, high: 1e7,
    help: "empty = measured over the last hour" },
  { name: "reward_delay_s", label: "Reward delay (s)", low: 0, high: 30 * 86400,
    help: "empty = measured from the counts" },
  { name: "reps", label: "Replications", integer: true, low: 10, high: 2000,
    help: "simulated runs per scenario (100)" },
  { name: "seed", label: "Seed", integer: true, low: 0, high: 2 ** 53,
    help: "empty = random; a seed repeats a forecast" },
  { name: "threshold", label: "Winner threshold", low: 0.5, high: 1,
    help: "P(best) a winner call needs (0.95)" },
  { name: "max_loss", label: "Max expected loss", low: 0, high: 1e300,
    help: "of a winner call (1% of the best mean)" },
];

export function forecastOptions(texts) {
  const values = {};
  const errors = [];
  for (const field of FORECAST_FIELDS) {
    const text = (texts[field.name] ?? "").trim();
    if (text === "") continue;
    const parsed = parseNumber(text, field, field.name);
    if (parsed.error) errors.push({ field: field.name, message: parsed.error });
    else values[field.name] = parsed.value;
  }
  return { values, errors };
}
