"""The data layout the numba kernels share with each other, the store, the forecast loop and
the simulator: reward families, the settings vector, array types.

The kernels (``posteriors``, ``best_arm``, ``allocation``, ``sampling``) take and return arrays
and scalars only, so that the forecast loop can call them from inside its own jitted loops;
validation and conversion live in :mod:`bandit.policy`.

Data layout (shared with the store and the simulator):

- ``family``: :data:`BERNOULLI` or :data:`GAUSSIAN`.
- ``stats`` float64 (3, K). Bernoulli: successes, failures, unused. Gaussian: weight W, weighted
  mean m, weighted sum of squared deviations q (Welford).
- ``counts`` float64 (K,): raw observation counts (never decayed), used for warm-up.
- ``prior`` float64 (4,). Bernoulli: alpha0, beta0, 0, 0. Gaussian (Normal-Gamma): mu0, kappa0,
  alpha0, beta0.
- ``settings`` float64 (8,), indexed by :data:`EPSILON` ... :data:`CONTROL_SHARE`.
- ``active`` bool (K,): paused arms are False and receive probability exactly 0.
- ``tail_table`` float64 (2, M): row 0 an increasing grid of Student-t degrees of freedom, row 1
  the matching upper tail quantiles ``t.isf(TAIL_PROBABILITY, dof)`` (built with scipy in
  :mod:`bandit.policy`, so these kernels stay free of scipy).

Posterior marginals of each arm's mean ("marginals", float64 (3, K)): Bernoulli rows are
alpha, beta, 0 of a Beta law; Gaussian rows are dof, loc, scale of a Student-t law.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

BERNOULLI = 0
GAUSSIAN = 1

EPSILON = 0
MIN_SHARE = 1
MAX_SHARE = 2
TEMPERATURE = 3
WARMUP = 4
TOP_TWO = 5
CONTROL_INDEX = 6
CONTROL_SHARE = 7
N_SETTINGS = 8

# The thinned quadrature grid keeps cost ~linear in the number of groups (1000 distinct
# overlapping Beta posteriors: ~50 ms, versus ~1 s for 20000 Monte Carlo draws), so the Monte
# Carlo fallback only guards against pathological inputs beyond the service's 1000 arms.
MAX_QUADRATURE_GROUPS = 1000
MONTE_CARLO_DRAWS = 20_000

# Per-side tail mass left out of each group's grid; policy.py builds the Student-t table with it.
TAIL_PROBABILITY = 1e-7


FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


