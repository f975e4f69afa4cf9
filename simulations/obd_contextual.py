"""The Open Bandit Dataset sample, contextually: the service's contextual Thompson sampling
learnt from the first part of the uniform-random log and evaluated off-policy on the rest.

The random log's logger chose every item with probability 1/K whatever the user, so its rows
are unbiased examples of every item's click rate in every context: the first ``train_share``
of them (time order, every slot) are the training data, added to one statistics row per item
exactly as the service adds rewards (``add_observations``). The posterior is then frozen, and
its allocation for each held-out row's context, pi(a | x_i) = ``probabilities(x_i)``, is the
target policy of :func:`~simulations.replay.ips` and :func:`~simulations.replay.snips` over the
held-out rows of one slot.

The model (``LinearModel``, d = 64 for the men campaign, the limit): an intercept; the four
``user_feature_j`` (hashed categorical) as categorical features declaring the values seen in
the training rows (an unseen value is "other"); each ``user-item_affinity_k`` as a numeric
feature on the fixed scale [0, 4] (most are 0; the largest in the sample is 15, clipped). The
service's default prior for Bernoulli rewards. The women campaign has 46 affinities and more
values: affinities beyond the dimension limit are left out (named in the result).

Beside it: the same evaluation of the service's *context-free* Thompson allocation frozen on
the same training rows (does the context add anything?), uniform random (IPS; on this log it
equals the held-out mean exactly), and the BTS logger's own click rate at the slot (its whole
log: a different policy on other traffic of the same week). The sample has few clicks (about
0.5%, a few dozen per log): the intervals are wide and overlap, which the result says.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bandit.features import MAX_DIMENSION, Feature, LinearModel
from bandit.policy import ContextualPosterior, PolicySettings
from bandit.policy.contextual import add_observations, stats_width
from bandit.policy.layout import FloatArray
from simulations.logs import Log, select_position, take_rows
from simulations.obd import load_obd_log, obd_csv
from simulations.replay import Estimate, ips, logged_mean, snips
from simulations.targets import thompson_probabilities, uniform_probabilities

__all__ = ["CONTEXTUAL_ESTIMATES", "ContextualOBD", "contextual_model",
           "evaluate_contextual_obd", "read_contexts"]

#: What each estimate of :func:`evaluate_contextual_obd` is, one line each.
CONTEXTUAL_ESTIMATES = {
    "contextual_thompson_ips": "IPS on the held-out random rows of the service's contextual "
                               "Thompson allocation, learnt on the training rows",
    "contextual_thompson_snips": "the same, self-normalised",
    "thompson_ips": "IPS of the service's context-free Thompson allocation, learnt on the same "
                    "rows",
    "thompson_snips": "the same, self-normalised",
    "uniform_ips": "IPS of uniform random (equals random_on_policy on this log)",
    "random_on_policy": "click rate of the held-out random rows (the uniform logger's own)",
    "bts_on_policy": "click rate ZOZO's Bernoulli Thompson logger got (its whole log, same slot)",
}

#: Scale of the affinity features (counts of past interactions; mostly 0, 1 or 2).
AFFINITY_SCALE = (0.0, 4.0)
USER_FEATURES = tuple(f"user_feature_{j}" for j in range(4))


@dataclass(frozen=True)
class ContextualOBD:
    """The estimates, the model's columns, and what was learnt from and evaluated on."""

    estimates: dict[str, Estimate]
    dimension: int
    affinities_left_out: list[str]
    train_rows: int
    train_clicks: int
    test_rows: int
    test_clicks: int


def read_contexts(name: str, data_dir: Path | None = None) -> list[dict[str, str | float]]:
    """Each row's context: the user features (strings) and the affinities (numbers)."""
    reader = csv.DictReader(io.StringIO(obd_csv(name, data_dir)[1], newline=""))
    contexts: list[dict[str, str | float]] = []
    for row in reader:
        context: dict[str, str | float] = {key: row[key] for key in USER_FEATURES}
        context.update({key: float(value) for key, value in row.items()
                        if key.startswith("user-item_affinity_")})
        contexts.append(context)
    return contexts


def contextual_model(train: list[dict[str, str | float]]) -> tuple[LinearModel, list[str]]:
    """The model of the module notes, and the affinities that did not fit in the dimension."""
    features = [Feature(key, "categorical",
                        values=tuple(sorted({str(c[key]) for c in train})))
                for key in USER_FEATURES]
    used = 1 + sum(f.width for f in features)
    affinities = sorted((key for key in train[0] if key.startswith("user-item_affinity_")),
                        key=lambda key: int(key.rsplit("_", 1)[1]))
    room = max(MAX_DIMENSION - used, 0)
    features += [Feature(key, "numeric", scale=AFFINITY_SCALE) for key in affinities[:room]]
    return LinearModel(features=tuple(features)), affinities[room:]


def _posterior(model: LinearModel, xs: FloatArray, log: Log) -> ContextualPosterior:
    rows = np.zeros((log.n_actions, stats_width(model.dimension)))
    add_observations(rows, log.actions, xs, log.rewards, np.ones(log.n))
    counts = np.bincount(log.actions, minlength=log.n_actions).astype(np.float64)
    return ContextualPosterior.build(model, rows, counts, PolicySettings(),
                                     np.ones(log.n_actions, dtype=np.bool_))


def evaluate_contextual_obd(data_dir: Path | None = None, campaign: str = "men",
                            position: int = 1, train_share: float = 0.5) -> ContextualOBD:
    """Learn on the first ``train_share`` of ``random_<campaign>`` (time order, all slots),
    estimate on the rest at ``position`` (see the module notes)."""
    if not 0.0 < train_share < 1.0:
        raise ValueError(f"train share must be in (0, 1), got {train_share}")
    log = load_obd_log(f"random_{campaign}", data_dir)
    contexts = read_contexts(f"random_{campaign}", data_dir)
    order = (np.argsort(log.timestamps, kind="stable") if log.timestamps is not None
             else np.arange(log.n))
    cut = round(train_share * log.n)
    train_index, test_index = order[:cut], order[cut:]
    train_contexts = [contexts[i] for i in train_index]
    model, left_out = contextual_model(train_contexts)
    train = take_rows(log, train_index)
    test = select_position(take_rows(log, test_index), position)
    test_contexts = [contexts[i] for i in test_index[log.positions[test_index] == position]] \
        if log.positions is not None else []
    posterior = _posterior(model, np.array([model.encode(c) for c in train_contexts]), train)
    target = np.array([posterior.probabilities(model.encode(c)) for c in test_contexts])
    clicks = np.bincount(train.actions, weights=train.rewards, minlength=log.n_actions)
    shown = np.bincount(train.actions, minlength=log.n_actions).astype(np.float64)
    context_free = thompson_probabilities(clicks, shown - clicks)
    bts = select_position(load_obd_log(f"bts_{campaign}", data_dir), position)
    estimates = {
        "contextual_thompson_ips": ips(test, target),
        "contextual_thompson_snips": snips(test, target),
        "thompson_ips": ips(test, context_free),
        "thompson_snips": snips(test, context_free),
        "uniform_ips": ips(test, uniform_probabilities(log.n_actions)),
        "random_on_policy": logged_mean(test),
        "bts_on_policy": logged_mean(bts),
    }
    return ContextualOBD(estimates, model.dimension, left_out, train.n,
                         int(train.rewards.sum()), test.n, int(test.rewards.sum()))

