"""JSON Schemas of what the service reports: statistics, history, the audit log, the tuning
advisor's requests and forecasts."""

from __future__ import annotations

from bandit.api.schemas import (
    ARM_CHANGES,
    ARM_STATE,
    CHANGES,
    COUNT,
    EXPLORATION_CHANGE,
    GUARDRAILS,
    ID,
    INTERVAL,
    LIFT,
    NULLABLE_NUMBER,
    NUMBER,
    REWARD,
    SHARE,
    VERSION,
    Schema,
    audit_log,
    closed_object,
    nullable,
)
from bandit.serving import advisor
from bandit.serving.history import MAX_LIMIT as MAX_HISTORY_SAMPLES

_NULLABLE_SHARE: Schema = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_COLUMN: Schema = {"type": "string", "description": "`intercept`, a numeric feature's name, "
                   "`feature=value` (categorical, `other` included) or `feature#bucket` "
                   "(hashed)"}
_MODEL_REPORT: Schema = nullable(closed_object(["columns", "arms"], {
    "columns": {"type": "array", "minItems": 1, "items": _COLUMN,
                "description": "the columns of the feature vector x, in order"},
    "arms": {"type": "array", "items": closed_object(["arm", "n", "mean", "ci95"], {
        "arm": ID,
        "n": {"type": "number", "minimum": 0,
              "description": "observations (fractional with forgetting)"},
        "mean": {"type": "array", "items": NULLABLE_NUMBER,
                 "description": "posterior mean of each column's coefficient"},
        "ci95": {"type": "array", "items": {"type": "array", "items": NULLABLE_NUMBER,
                                            "minItems": 2, "maxItems": 2},
                 "description": "central 95% interval of each column's coefficient "
                                "(Student-t: the noise variance integrated out)"}})}},
    description="a contextual experiment's model: each arm's expected reward is x . "
                "coefficients; the posteriors are untempered (null: a context-free experiment)"))
_SEGMENTS: Schema = {
    "anyOf": [{"type": "array", "items": closed_object(["feature", "values"], {
        "feature": {"type": "string", "description": "a categorical feature of the model"},
        "values": {"type": "array", "items": closed_object(
            ["value", "decisions", "served", "share"], {
                "value": {"type": "string",
                          "description": "a declared value, then `other` (any other value)"},
                "decisions": {**COUNT, "description": "decisions served with this value"},
                "served": {"type": "array", "items": COUNT,
                           "description": "per arm, in the order of `arms`: decisions served"},
                "share": {"type": "array", "items": _NULLABLE_SHARE,
                          "description": "per arm: its part of `decisions` (null: none "
                                         "served)"}})}})},
              {"type": "null"}],
    "description": "a contextual experiment's decisions served per value of each categorical "
                   "feature, since creation (a slate counts once, for its first arm; null: a "
                   "context-free experiment)"}

_LOG: Schema = closed_object(
    ["enabled", "records", "oldest", "trimmed", "dropped", "max_age_s", "max_records"], {
        "enabled": {"type": "boolean", "description": "this process logs its decisions"},
        "records": {**COUNT, "description": "decision and reward records kept"},
        "oldest": {"type": ["number", "null"],
                   "description": "when the oldest record kept was stored (POSIX seconds)"},
        "trimmed": {**COUNT, "description": "records removed by the retention"},
        "dropped": {**COUNT, "description": "decision records the service processes dropped "
                                            "because Redis was slow or unreachable and their "
                                            "buffers were full"},
        "max_age_s": {"type": ["number", "null"], "description": "retention by age"},
        "max_records": {"type": ["integer", "null"], "description": "retention by size"}},
    description="the experiment's decision log (`bandit log export`)")

_P_VIOLATES: Schema = {**_NULLABLE_SHARE, "description": "P(the arm's mean breaks the "
                        "threshold) under the untempered posterior; null for the control (always "
                        "feasible) and paused arms"}
_ARM_GUARDRAIL: Schema = closed_object(["n", "mean", "ci95", "p_violates"], {
    "n": {"type": "number", "minimum": 0,
          "description": "observations of the metric (fractional with forgetting)"},
    "mean": NULLABLE_NUMBER,
    "ci95": {"type": "array", "items": NULLABLE_NUMBER, "minItems": 2, "maxItems": 2},
    "p_violates": _P_VIOLATES})
_GUARDRAIL_REPORT: Schema = nullable(closed_object(
    ["metrics", "control", "gate_min_samples", "monte_carlo_error"], {
        "metrics": GUARDRAILS,
        "control": {"type": ["string", "null"],
                    "description": "the arm relative thresholds are judged against"},
        "gate_min_samples": {"type": ["integer", "null"], "minimum": 1,
                             "description": "the hard gate's minimum sample (null: no gate)"},
        "monte_carlo_error": {"type": "number", "minimum": 0,
                              "description": "largest Monte Carlo standard error of "
                                             "P(best feasible) (0: exact)"}},
    description="the guardrails and their gate (null: the experiment has none)"))

_STATS: Schema = closed_object(
    ["experiment", "version", "reward", "arms", "control", "winner", "call_rule", "health",
     "model", "segments", "log", "guardrails"], {
        "experiment": ID, "version": VERSION, "reward": REWARD,
        "arms": {"type": "array", "items": closed_object(
            ["arm", "state", "n", "served", "mean", "ci95", "p_best", "expected_loss", "share",
             "lift"],
            {"arm": ID, "state": ARM_STATE,
             "n": {"type": "number", "minimum": 0,
                   "description": "observations (fractional with forgetting)"},
             "served": {**COUNT, "description": "decisions served"},
             "mean": NULLABLE_NUMBER,
             "ci95": {"type": "array", "items": NULLABLE_NUMBER, "minItems": 2, "maxItems": 2},
             "p_best": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
             "expected_loss": NULLABLE_NUMBER,
             "share": {**_NULLABLE_SHARE,
                       "description": "current allocation probability; for a contextual "
                                      "experiment (which allocates per context) the average "
                                      "propensity of the arm over every decision drawn since "
                                      "creation (the sample-ratio sums: expected / drawn), "
                                      "null before the first"},
             "lift": LIFT,
             "guardrails": {"type": "object", "additionalProperties": _ARM_GUARDRAIL,
                            "description": "with guardrails: each guardrail metric of the arm"},
             "p_violates": {**_P_VIOLATES, "description": "with guardrails: P(the arm breaks "
                            "any guardrail); null for the control and paused arms"},
             "p_best_feasible": {**_NULLABLE_SHARE, "description": "with guardrails: P(the arm "
                                 "is the best feasible arm), untempered; null when paused"},
             "held": {"type": "boolean", "description": "with guardrails: the hard gate holds "
                                                        "the arm at the floor"}})},
        "control": nullable(closed_object(["arm", "chosen_by"], {
            "arm": ID,
            "chosen_by": {"enum": ["setting", "name"],
                          "description": "the `control` exploration setting's arm, else an "
                                         "arm named `control`"}},
            description="the arm every lift is against; null: each arm's lift is against the "
                        "best other active arm")),
        "winner": nullable(closed_object(
            ["arm", "p_best", "expected_loss", "threshold", "max_loss"], {
                "arm": ID, "p_best": {**SHARE, "description": "P(best); with guardrails "
                                      "P(best feasible)"},
                "expected_loss": NUMBER, "threshold": SHARE,
                "max_loss": NUMBER,
                "p_feasible": {**SHARE, "description": "with guardrails: P(the winner keeps "
                               "every guardrail), at least the threshold"}})),
        "call_rule": closed_object(["threshold", "max_loss"], {
            "threshold": SHARE, "max_loss": {"type": "number", "minimum": 0}},
            description="what a winner call needs (also when there is no winner)"),
        "health": closed_object(["sample_ratio", "rewards"], {
            "sample_ratio": nullable(closed_object(
                ["decisions", "chi2", "dof", "p_value", "ok", "expected", "observed",
                 "design_effect", "since", "window_s"], {
                    "decisions": COUNT, "chi2": NUMBER, "dof": COUNT, "p_value": SHARE,
                    "ok": {"type": "boolean"},
                    "expected": {"type": "array", "items": NUMBER},
                    "observed": {"type": "array", "items": COUNT},
                    "design_effect": {**NUMBER, "description": "the Pearson statistic is "
                                      "divided by this (moving propensities)"},
                    "since": {**NUMBER, "description": "server time the window starts"},
                    "window_s": {**NUMBER, "description": "the window's length"}},
                description="chi-square test of the draws per arm over the last hour against "
                            "the sum of their propensities")),
            "rewards": nullable(closed_object(
                ["observations", "unchanged_since", "decisions_since", "quiet_for_s", "stalled"], {
                    "observations": NUMBER, "unchanged_since": NUMBER,
                    "decisions_since": NUMBER, "quiet_for_s": NUMBER,
                    "stalled": {"type": "boolean"}},
                description="when rewards last arrived; stalled if decisions kept being served "
                            "without them")),
        }),
        "model": _MODEL_REPORT,
        "segments": _SEGMENTS,
        "log": _LOG,
        "guardrails": _GUARDRAIL_REPORT,
    })

_NUMBERS: Schema = {"type": "array", "items": NUMBER}
_NULLABLE_NUMBERS: Schema = {"type": "array", "items": NULLABLE_NUMBER}
_HISTORY: Schema = closed_object(
        ["experiment", "interval_s", "coarse_interval_s", "fine_window_s", "samples"], {
    "experiment": ID,
    "interval_s": {"type": "number", "description": "sampling interval of the newest "
                                                    "samples"},
    "coarse_interval_s": {"type": "number",
                          "description": "sampling interval of samples older than "
                                         "fine_window_s"},
    "fine_window_s": {"type": "number", "description": "how far back samples are "
                                                       "interval_s apart (0: all are coarse)"},
    "samples": {"type": "array", "maxItems": MAX_HISTORY_SAMPLES, "items": closed_object(
        ["t", "version", "arms", "share", "mean", "ci_low", "ci_high", "n", "served"], {
            "t": {"type": "number", "description": "server time of the sample, epoch seconds"},
            "version": VERSION,
            "arms": {"type": "array", "items": ID},
            "share": {"type": "array", "items": _NULLABLE_SHARE,
                      "description": "allocation probabilities; for a contextual experiment "
                                     "the average propensity of each arm so far (as the "
                                     "stats' `share`), null before the first draw"},
            "mean": _NULLABLE_NUMBERS, "ci_low": _NULLABLE_NUMBERS,
            "ci_high": _NULLABLE_NUMBERS, "n": _NUMBERS,
            "served": {"type": "array", "items": COUNT,
                       "description": "decisions served so far (cumulative)"},
            "drawn": {"type": "array", "items": COUNT,
                      "description": "fresh random draws that chose the arm (cumulative; "
                                     "absent from samples of earlier versions)"},
            "expected": {**_NUMBERS, "description": "the arm's propensity summed over "
                                                    "every draw (cumulative)"},
            "variance": {**_NUMBERS, "description": "p(1-p) summed over every draw "
                                                    "(cumulative)"},
            "segments": {"type": "object",
                         "additionalProperties": {"type": "array", "items": COUNT},
                         "description": "contextual experiments only: decisions served per "
                                        "segment (`feature=value`) and arm, cumulative; a "
                                        "segment never served is left out"},
            "p_violates": {"type": "array", "items": _NULLABLE_SHARE,
                           "description": "experiments with guardrails only: P(the arm breaks "
                                          "any guardrail), as the stats' `p_violates` (null "
                                          "for the control and paused arms), rounded to "
                                          "1e-4"},
            "held": {"type": "array", "items": {"type": "boolean"},
                     "description": "experiments with guardrails only: the hard gate holds "
                                    "the arm at the floor"}})},
})

# (Unarchiving was recorded as `unarchive` and missing here: an audit log showing one broke the
# document's promise.)
# `gate`: the guardrails' hard gate held or released arms (actor `guardrail-gate`, changes
# `{"held": {"old": [arms], "new": [arms]}}`).
_AUDIT: Schema = audit_log("experiment", ["create", "update", "archive", "unarchive", "gate"])

_ADVISE: Schema = {
    "type": ["object", "null"], "additionalProperties": False,
    "description": "a proposal in the PATCH body's format (checked by the same code) and the "
                   "forecast's parameters",
    "properties": {
        "exploration": EXPLORATION_CHANGE,
        "arms": ARM_CHANGES,
        "decisions": {"type": ["integer", "null"], "minimum": advisor.MIN_DECISIONS,
                      "maximum": advisor.MAX_DECISIONS,
                      "description": "horizon; default an hour of the measured traffic. A "
                                     f"forecast may take at most about {advisor.MAX_SECONDS:g} "
                                     "s of CPU (422 above)"},
        "traffic_per_s": {"type": ["number", "null"], "minimum": advisor.MIN_TRAFFIC_PER_S,
                          "maximum": advisor.MAX_TRAFFIC_PER_S,
                          "description": "default: measured (422 when nothing was served)"},
        "reward_delay_s": {"type": ["number", "null"], "minimum": 0, "maximum": 30 * 86_400,
                           "description": "default: measured"},
        "reps": {"type": "integer", "minimum": 10, "maximum": advisor.MAX_REPS,
                 "description": f"simulated futures (default {advisor.DEFAULT_REPS})"},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        "threshold": {"type": "number", "minimum": 0.5, "maximum": 1,
                      "description": "P(best) a winner call needs (default 0.95)"},
        "max_loss": {"type": ["number", "null"], "minimum": 0,
                     "description": "largest expected loss of a winner (default: as in stats)"},
    },
}
_BAND: Schema = closed_object(
    ["mean", "low", "high"], dict.fromkeys(("mean", "low", "high"), _NUMBERS),
    description="per checkpoint: mean over the simulated futures, 10th and 90th percentiles")
_MEDIAN_RANGE: Schema = nullable(closed_object(["median", "range80"],
                                          {"median": NUMBER, "range80": INTERVAL}))
_FORECAST_SCENARIO: Schema = closed_object(
    ["regret", "regret_curve", "shares", "best_arm_rate", "winner_call"], {
        "regret": closed_object(["mean", "ci95", "range80"],
                          {"mean": NUMBER, "ci95": INTERVAL, "range80": INTERVAL},
                          description="expected regret (reward units) over the horizon: mean, "
                                      "its 95% Monte Carlo interval, 10th-90th percentile"),
        "regret_curve": _BAND,
        "shares": {"type": "object", "additionalProperties": _BAND,
                   "description": "each arm's share of the decisions between checkpoints"},
        "best_arm_rate": closed_object(["mean", "ci95"], {"mean": NUMBER, "ci95": INTERVAL}),
        "winner_call": closed_object(["probability", "ci95", "correct", "decisions", "seconds"], {
            "probability": {**SHARE, "description": "P(a winner is called in the horizon)"},
            "ci95": INTERVAL,
            "correct": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                        "description": "P(the called arm is the truly best | a call)"},
            "decisions": _MEDIAN_RANGE, "seconds": _MEDIAN_RANGE}),
    })
_BAND_INTERVAL: Schema = closed_object(["mean", "ci95", "range80"], {
    "mean": NUMBER, "ci95": INTERVAL, "range80": INTERVAL},
    description="over the simulated futures: mean, its 95% Monte Carlo interval, 10th-90th "
                "percentile")
_GUARD_SCENARIO: Schema = closed_object(
    ["regret", "infeasible_decisions", "infeasible_share", "held_share", "shares"], {
        "regret": {**_BAND_INTERVAL, "description": "primary regret over the horizon against "
                   "the best feasible arm of the simulated world (the guarded allocation's; the "
                   "top-level regret is P(best)'s, blind to the guardrails)"},
        "shares": {"type": "object", "additionalProperties": SHARE,
                   "description": "each arm's share of the horizon's decisions under the "
                                  "guarded allocation (mean over the futures)"},
        "infeasible_decisions": {**_BAND_INTERVAL, "description": "decisions of the horizon "
                                 "sent to arms that break a guardrail in the simulated world"},
        "infeasible_share": {**_BAND_INTERVAL, "description": "the same, as a share of the "
                                                              "horizon's decisions"},
        "held_share": {**_BAND_INTERVAL, "description": "share of the decisions sent to arms "
                                                        "the hard gate held (at the floor)"}})
_GUARD_FORECAST: Schema = closed_object(
    ["metrics", "control", "recompute_every", "recomputations", "p_infeasible",
     "p_any_infeasible", "current", "proposed", "difference"], {
        "metrics": GUARDRAILS,
        "control": {"type": ["string", "null"],
                    "description": "the arm relative thresholds are judged against"},
        "recompute_every": {"type": "integer", "minimum": 1,
                            "description": "decisions between recomputations of the guarded "
                                           "allocation in the forecast"},
        "recomputations": {"type": "integer", "minimum": 1,
                           "description": "guarded allocations per future and scenario (at "
                                          f"most {advisor.MAX_GUARD_RECOMPUTATIONS})"},
        "p_infeasible": {"type": "object", "additionalProperties": SHARE,
                         "description": "per arm: the share of the simulated worlds (drawn "
                                        "from the posteriors) in which it breaks a guardrail"},
        "p_any_infeasible": {**SHARE, "description": "share of the worlds with an infeasible "
                                                     "arm"},
        "current": _GUARD_SCENARIO,
        "proposed": _GUARD_SCENARIO,
        "difference": closed_object(["infeasible_share", "regret", "p_proposed_safer"], {
            "infeasible_share": closed_object(["mean", "ci95"],
                                              {"mean": NUMBER, "ci95": INTERVAL}),
            "regret": closed_object(["mean", "ci95"], {"mean": NUMBER, "ci95": INTERVAL},
                                    description="proposed minus current, paired"),
            "p_proposed_safer": {**SHARE, "description": "share of the futures in which the "
                                 "proposal sends fewer decisions to infeasible arms"}})},
    description="experiments with guardrails only: the traffic each scenario sends to arms "
                "that break a guardrail, under the guarded allocation and its gate")
_ADVICE: Schema = closed_object(
    ["experiment", "version", "changes", "assumptions", "checkpoints", "arms", "current",
     "proposed", "difference"], {
        "experiment": ID,
        "version": {**VERSION, "description": "the version the forecast started from"},
        "changes": CHANGES,
        "assumptions": closed_object(
            ["decisions", "traffic_per_s", "traffic_source", "reward_delay_s", "delay_source",
             "reward_coverage", "horizon_s", "update_every", "reps", "seed", "threshold",
             "max_loss", "notes"], {
                "decisions": {"type": "integer", "minimum": advisor.MIN_DECISIONS},
                "traffic_per_s": NUMBER,
                "traffic_source": {"enum": ["given", "measured"]},
                "reward_delay_s": NUMBER,
                "delay_source": {"enum": ["given", "measured", "assumed"]},
                "reward_coverage": NULLABLE_NUMBER,
                "horizon_s": NUMBER,
                "update_every": {"type": "integer", "minimum": 1},
                "reps": {"type": "integer"}, "seed": {"type": "integer"},
                "threshold": NUMBER, "max_loss": NUMBER,
                "notes": {"type": "array", "items": {"type": "string"}}}),
        "checkpoints": closed_object(["decisions", "seconds"], {
            "decisions": {"type": "array", "items": {"type": "integer"}},
            "seconds": _NUMBERS}),
        "arms": {"type": "array", "items": ID},
        "current": _FORECAST_SCENARIO,
        "proposed": _FORECAST_SCENARIO,
        "difference": closed_object(["regret", "p_proposed_better"], {
            "regret": closed_object(["mean", "ci95"], {"mean": NUMBER, "ci95": INTERVAL}),
            "p_proposed_better": SHARE}),
        "guardrails": _GUARD_FORECAST,
    })


#: The named schemas of this module, for the document's ``components``.
COMPONENTS: dict[str, Schema] = {
    "Stats": _STATS, "History": _HISTORY, "Audit": _AUDIT, "AdviseRequest": _ADVISE,
    "Advice": _ADVICE,
}
