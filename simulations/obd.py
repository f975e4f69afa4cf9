"""The Open Bandit Dataset sample, shipped with the package, and the worked example on it.

The sample is the one the Open Bandit Pipeline ships (ZOZO, Inc.; Saito, Aihara, Matsutani and
Narita, NeurIPS 2021 Datasets and Benchmarks), released under CC BY 4.0. It lies unmodified in
``simulations/data/obd/obd-sample.tar.gz``; ``simulations/data/obd/README.md`` gives its source,
licence and columns; :mod:`simulations.data` names it.

Each row is one slot (``position`` 1, 2 or 3) of a three-item recommendation, and
``propensity_score`` is the probability of that item *in that slot*. Click rates differ between
slots, so evaluations select one slot (:func:`~simulations.logs.select_position`) and then
treat the rows as independent single-slot decisions.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
from pathlib import Path

import numpy as np

from simulations.data import obd_sample_archive
from simulations.logs import Log, read_log, select_position
from simulations.replay import Estimate, ips, logged_mean, replay, snips
from simulations.targets import ThompsonPolicy, thompson_probabilities, uniform_probabilities

__all__ = ["ESTIMATES", "evaluate_obd", "load_obd_log", "obd_csv"]

#: What each row of :func:`evaluate_obd` estimates, one line each (printed under the table).
ESTIMATES = {
    "random_on_policy": "click rate the uniform-random logger got (its own log's mean)",
    "bts_on_policy": "click rate ZOZO's Bernoulli Thompson logger got (its own log's mean)",
    "uniform_ips": "IPS of the uniform policy on the random log: a sanity check, equal to "
                   "random_on_policy",
    "bts_ips": "IPS on the random log of the BTS logger's week-average allocation; should "
               "agree with bts_on_policy",
    "bts_snips": "the same, self-normalised (less variable)",
    "thompson_static_ips": "IPS on the random log of this service's Thompson allocation, frozen "
                           "at posteriors counted on the bts log",
    "thompson_replay": "replay (Li et al. 2011) of this service's Thompson sampler learning from "
                       "Beta(1, 1) on the random log; only rows where it picked the logged item "
                       "count, so its n is small",
}


def load_obd_log(name: str, data_dir: Path | None = None) -> Log:
    """One log (``random_men``, ``bts_women``, ...) from ``data_dir``, else from the sample.

    ``data_dir`` is for a copy of the full dataset laid out the same way (``<name>.csv``).
    """
    source, text = obd_csv(name, data_dir)
    return read_log(io.StringIO(text, newline=""), source)


def obd_csv(name: str, data_dir: Path | None = None) -> tuple[str, str]:
    """Where log ``name`` comes from, and its CSV text (see :func:`load_obd_log`)."""
    if data_dir is not None:
        path = data_dir / f"{name}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"no OBD log {name!r}: {path} is missing")
        return str(path), path.read_text(encoding="utf-8")
    archive = obd_sample_archive()
    with archive.open("rb") as raw, tarfile.open(fileobj=raw, mode="r:gz") as tar:
        try:
            member = tar.extractfile(f"{name}.csv")
        except KeyError:
            logs = sorted(n.removesuffix(".csv") for n in tar.getnames()
                          if not n.endswith("_items.csv"))
            raise FileNotFoundError(f"no OBD log {name!r} in the shipped sample; it holds "
                                    f"{', '.join(logs)}") from None
        if member is None:
            raise FileNotFoundError(f"{name}.csv in {archive} is not a file")
        return f"{archive}:{name}.csv", member.read().decode("utf-8")


def evaluate_obd(
    data_dir: Path | None = None, campaign: str = "men", position: int = 1, seed: int = 0
) -> dict[str, Estimate]:
    """The worked example: policies of the Open Bandit Dataset, evaluated at one slot.

    Reads ``random_<campaign>`` (uniform logger) and ``bts_<campaign>`` (Bernoulli Thompson
    logger, run over the same week), from ``data_dir`` or from the shipped sample, and returns:

    - ``random_on_policy``, ``bts_on_policy``: each logger's own mean click rate at the slot;
    - ``uniform_ips``: IPS of the uniform policy on the random log (a sanity check: it equals
      ``random_on_policy`` exactly, with a wider interval);
    - ``bts_ips``, ``bts_snips``: the BTS logger's value estimated from the *random* log. Its
      allocation changed during the week, so it is represented by its time-averaged allocation,
      the item frequencies at this slot in the bts log; these should agree with
      ``bts_on_policy`` up to their confidence intervals;
    - ``thompson_static_ips``: IPS on the random log of the service's Thompson allocation
      frozen at Beta(1 + clicks, 1 + non-clicks) posteriors counted on the bts log (a hold-out:
      the posteriors never saw the random log);
    - ``thompson_replay``: replay over the random log of the service's online Thompson sampler
      starting from Beta(1, 1), seeded by ``seed``.
    """
    full = {name: load_obd_log(f"{name}_{campaign}", data_dir) for name in ("random", "bts")}
    # Both logs index the same item list; an item may be missing from one of them.
    n_actions = max(log.n_actions for log in full.values())
    random_log, bts_log = (
        select_position(dataclasses.replace(full[name], n_actions=n_actions), position)
        for name in ("random", "bts")
    )
    bts_allocation = np.bincount(bts_log.actions, minlength=n_actions) / bts_log.n
    clicks = np.bincount(bts_log.actions, weights=bts_log.rewards, minlength=n_actions)
    shown = np.bincount(bts_log.actions, minlength=n_actions).astype(np.float64)
    return {
        "random_on_policy": logged_mean(random_log),
        "bts_on_policy": logged_mean(bts_log),
        "uniform_ips": ips(random_log, uniform_probabilities(n_actions)),
        "bts_ips": ips(random_log, bts_allocation),
        "bts_snips": snips(random_log, bts_allocation),
        "thompson_static_ips": ips(random_log, thompson_probabilities(clicks, shown - clicks)),
        "thompson_replay": replay(random_log, ThompsonPolicy.fresh(n_actions), seed=seed),
    }
