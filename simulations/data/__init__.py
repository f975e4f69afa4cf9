"""Data shipped with the package: the Open Bandit Dataset sample (``obd/``, CC BY 4.0).

Kept apart from :mod:`simulations.obd` so that the command line can name it in its help without
importing the evaluation code (and numba with it).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

__all__ = ["OBD_ATTRIBUTION", "OBD_CAMPAIGNS", "obd_sample_archive"]

OBD_CAMPAIGNS = ("men", "women")

OBD_ATTRIBUTION = (
    "Data: the Open Bandit Dataset sample by ZOZO, Inc. (Saito, Aihara, Matsutani and Narita, "
    "\"Open Bandit Dataset and Pipeline\", NeurIPS 2021 Datasets and Benchmarks), "
    "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/), shipped unmodified."
)


def obd_sample_archive() -> Traversable:
    """The shipped archive of the sample's eight CSV files, inside the installed package."""
    return resources.files(__name__) / "obd" / "obd-sample.tar.gz"
