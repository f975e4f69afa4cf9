"""Integer codes and array layouts of the replication loop (:mod:`bandit.forecast.replicate`).

numba kernels take plain arrays and integers, not objects: a policy is a code and a few
parameter arrays, an environment a parameter array, and the loop's per-step trace and
per-replication diagnostics are rows indexed by the constants here. Callers that build the
arrays (the advisor's forecast, the simulator's policy and environment specs) and callers that
read them back use these names, so both sides agree on one layout.
"""

from __future__ import annotations

# Policy kernel codes: which decision rule the loop runs.
UNIFORM = 0
EPSILON_GREEDY = 1
UCB1 = 2
KL_UCB = 3
BAYES_UCB = 4
SW_UCB = 5
THOMPSON = 6

# Layout of a policy's ``extra`` array: the parameters that are not the service's settings.
X_EPSILON = 0
X_SCALE = 1
X_C = 2
X_TAU = 3
X_XI = 4
X_HALF_LIFE = 5
X_HORIZON = 6
X_QUADRATURE = 7
N_EXTRA = 8

# Layout of an environment's ``params`` array.
NOISE_SD = 0
DRIFT_SD = 1
CHURN = 2
CHURN_ALPHA = 3
CHURN_BETA = 4
N_ENV_PARAMS = 5

# Trace columns (one row per step when tracing).
T_ARM = 0
T_REWARD = 1
T_ARM_MEAN = 2
T_BEST_MEAN = 3
T_PROPENSITY = 4
T_REVISION = 5
N_TRACE = 6

# Diagnostics of one replication.
D_DELIVERED = 0
D_PENDING = 1
D_PENDING_REWARD = 2
D_DISCARDED = 3
D_DELAY_SUM = 4
D_RETIRED = 5
D_REVISIONS = 6
D_MEAN_MIN = 7
D_MEAN_MAX = 8
D_QUADRATURES = 9
N_DIAGNOSTICS = 10
