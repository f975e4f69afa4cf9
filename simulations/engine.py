"""The simulation engine: numba replication loops run in parallel threads.

One replication (:func:`_replicate`, jitted, ``nogil``) is, for t = 0 .. T-1:

1. the environment moves (abrupt change, drift, churn; see :mod:`simulations.environments`);
2. every ``batch`` steps the policy's *view* is refreshed from the *store*, the way the
   service's cache sees the rewards Redis holds (``batch=1``: the view is the store);
3. the policy decides from its view; the reward is drawn;
4. the reward is written to the store at once, or after a delay (``delay`` D > 0: geometric on
   {0, 1, ...} with mean D steps; a delay of d makes it visible to the decision of step
   t + d + 1, like an immediate reward when d = 0); rewards of an arm retired by churn are
   dropped on arrival (a churned slot restarts from the prior in the store, while the view
   keeps the old arm's statistics until the next refresh, as the service's cache would);
5. with forgetting (a half-life h in steps) the store decays by 2^(-1/h) at the end of the step,
   and a delayed reward is back-dated to the step it happened, as the service's Lua does with an
   event's ``ts``: the ``bandit.kernels.forget`` semantics one step at a time.

Thompson sampling runs the service's code: with floors or caps on (or ``quadrature=1``), the
allocation probabilities are ``bandit.kernels.policy_probabilities`` of the view, recomputed
whenever the view changes, and each decision is the service's ``sample_arms`` search of their
``cumulative``; otherwise decisions are drawn by sampling with the exact same distribution
(:func:`simulations.policies.choose_thompson`), which is ~100x cheaper than one quadrature.

Replications get independent generators from ``SeedSequence(seed).spawn(reps)`` and write to
their own rows, so results do not depend on the number of threads, nor on where a chunk of
replications runs (:func:`simulate_chunk`, what :mod:`simulations.distributed` runs on Dask).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

from bandit.policy import kernels, student_t_tail_table
from bandit.policy.kernels import BERNOULLI
from simulations import environments as env
from simulations import policies as pol
from simulations.environments import Environment, lai_robbins_bound, lai_robbins_constant
from simulations.policies import PolicySpec

__all__ = [
    "SimulationResult",
    "Trace",
    "lai_robbins_bound",
    "lai_robbins_constant",
    "log_checkpoints",
    "simulate",
    "simulate_chunk",
    "trace",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

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

# Pending delayed rewards: int columns of the heap.
_H_ARRIVAL = 0
_H_SENT = 1
_H_ARM = 2
_H_GENERATION = 3

_jit = numba.njit(cache=True, nogil=True)


@_jit
def sample_from_cdf(cdf: FloatArray, uniform: float) -> int:
    """The decision of kernels.sample_arms for the uniform it draws, without allocating."""
    return int(np.searchsorted(cdf, uniform, side="right"))


@_jit
def _heap_push(ints: IntArray, rewards: FloatArray, size: int, row: IntArray,
               reward: float) -> None:
    """Insert into a binary min-heap on ints[:, _H_ARRIVAL] holding ``size`` entries."""
    i = size
    while i > 0:
        parent = (i - 1) // 2
        if ints[parent, _H_ARRIVAL] <= row[_H_ARRIVAL]:
            break
        ints[i] = ints[parent]
        rewards[i] = rewards[parent]
        i = parent
    ints[i] = row
    rewards[i] = reward


@_jit
def _heap_pop(ints: IntArray, rewards: FloatArray, size: int, row: IntArray) -> float:
    """Remove the earliest entry into ``row`` and return its reward; ``size`` is before removal."""
    row[:] = ints[0]
    reward = float(rewards[0])
    last = size - 1
    i = 0
    while True:
        child = 2 * i + 1
        if child >= last:
            break
        if child + 1 < last and ints[child + 1, _H_ARRIVAL] < ints[child, _H_ARRIVAL]:
            child += 1
        if ints[last, _H_ARRIVAL] <= ints[child, _H_ARRIVAL]:
            break
        ints[i] = ints[child]
        rewards[i] = rewards[child]
        i = child
    ints[i] = ints[last]
    rewards[i] = rewards[last]
    return reward


@numba.njit(inline="always")
def _deliver(code: int, family: int, store: FloatArray, counts: FloatArray, arm: int,
             reward: float, weight: float) -> None:
    """Add one observation as the service's Lua does (Welford for Gaussian arms)."""
    counts[arm] += 1.0
    if code == pol.SW_UCB:
        store[0, arm] += 1.0
        store[1, arm] += reward
    elif family == BERNOULLI:
        store[0, arm] += weight * reward
        store[1, arm] += weight * (1.0 - reward)
    else:
        total = store[0, arm] + weight
        if total > 0.0:
            delta = reward - store[1, arm]
            store[1, arm] += weight * delta / total
            store[2, arm] += weight * delta * (reward - store[1, arm])
            store[0, arm] = total


@numba.njit(inline="always")
def _mark(changed: BoolArray, stack: IntArray, n_changed: int, k: int) -> int:
    """Note that arm k's statistics changed since the last refresh; returns the new count."""
    if not changed[k]:
        changed[k] = True
        stack[n_changed] = k
        n_changed += 1
    return n_changed


@_jit
def _slide_window(
    generation: IntArray, ring: FloatArray, ring_state: IntArray, store: FloatArray,
    changed: BoolArray, changed_stack: IntArray, n_changed: int, arm: int, reward: float,
) -> int:
    """SW-UCB: the oldest arrival leaves the window (unless its arm has retired since) and
    the new one enters; returns the new count of changed arms. _deliver adds the new one."""
    window = ring.shape[0]
    head, size = ring_state[0], ring_state[1]
    if size == window:
        old = int(ring[head, 0])
        if ring[head, 1] == generation[old]:
            store[0, old] -= 1.0
            store[1, old] -= ring[head, 2]
            n_changed = _mark(changed, changed_stack, n_changed, old)
        head = (head + 1) % window
        size -= 1
    slot = (head + size) % window
    ring[slot, 0] = arm
    ring[slot, 1] = generation[arm]
    ring[slot, 2] = reward
    ring_state[0], ring_state[1] = head, size + 1
    return n_changed


@_jit
def _replicate(
    code: int, settings: FloatArray, prior: FloatArray, extra: FloatArray,
    family: int, initial_means: FloatArray, change_times: IntArray, change_means: FloatArray,
    env_params: FloatArray, noise: FloatArray, initial: FloatArray, active_in: BoolArray,
    horizon: int, batch: int, delay: float, checkpoints: IntArray,
    tail_table: FloatArray, rng: np.random.Generator,
    pseudo_out: FloatArray, regret_out: FloatArray, best_out: FloatArray,
    shares_out: FloatArray, pulls_out: FloatArray, trace: FloatArray,
    diagnostics: FloatArray, final_stats: FloatArray, stats_out: FloatArray,
) -> None:
    """One replication (see the module docstring); writes its rows of the outputs.

    ``noise`` (K,) is each arm's reward noise sd (Gaussian). ``initial`` (4, K) is the store's
    statistics and raw counts at the start (zeros: the prior), so a forecast can start from a
    live experiment; ``active_in`` (K,) marks the arms that may be served (False: paused, which
    takes the service's probability path). ``trace`` is (T, N_TRACE) to record every step, or
    (0, N_TRACE); ``final_stats`` (4, K) receives the store's statistics and raw counts at the
    end, and ``stats_out`` (C, 4, K), unless it is (0, 4, K), the same at every checkpoint.
    """
    n_arms = initial_means.shape[0]
    bernoulli = family == BERNOULLI
    means = initial_means.copy()
    generation = np.zeros(n_arms, dtype=np.int64)
    store = initial[:3].copy()
    store_counts = initial[3].copy()
    all_active = True
    for k in range(n_arms):
        all_active = all_active and active_in[k]
    separate = batch > 1
    view = np.zeros((3, n_arms)) if separate else store
    view_counts = np.zeros(n_arms) if separate else store_counts
    # Arms whose statistics changed since the last refresh, as flags and as a stack.
    changed = np.ones(n_arms, dtype=np.bool_)
    changed_stack = np.arange(n_arms)
    n_changed = n_arms
    revision = 0

    thompson = code == pol.THOMPSON
    quadrature = thompson and (
        extra[pol.X_QUADRATURE] > 0.0
        or not all_active
        or settings[kernels.MIN_SHARE] > 0.0
        or settings[kernels.MAX_SHARE] < 1.0
    )
    plain = thompson and not quadrature and (
        settings[kernels.EPSILON] == 0.0
        and settings[kernels.WARMUP] == 0.0
        and math.isnan(settings[kernels.TOP_TWO])
        and not settings[kernels.CONTROL_INDEX] >= 0.0
    )
    inv_temperature = 1.0 / settings[kernels.TEMPERATURE]
    params = np.zeros((pol.N_PARAMS, n_arms))
    active = active_in.copy()
    racing = active_in.copy()
    if thompson and settings[kernels.CONTROL_INDEX] >= 0.0:
        racing[int(settings[kernels.CONTROL_INDEX])] = False
    probabilities = np.zeros(n_arms)
    cdf = np.ones(n_arms)
    half_life = extra[pol.X_HALF_LIFE]
    forgetting = half_life > 0.0 and math.isfinite(half_life)
    decay = 2.0 ** (-1.0 / half_life) if forgetting else 1.0
    second = 1 if bernoulli else 2

    # SW-UCB: ring buffer of the last tau delivered observations.
    window = int(extra[pol.X_TAU]) if code == pol.SW_UCB else 1
    ring = np.zeros((window, 3))  # arm, generation, reward
    ring_state = np.zeros(2, dtype=np.int64)  # head, size

    # Delayed rewards: a min-heap on arrival step, grown by doubling when full.
    delayed = delay > 0.0
    arrive = 1.0 / (1.0 + delay)
    # Sized for the typical backlog, and never above the horizon (at most one pending reward per
    # step): a delay far beyond the horizon must not allocate memory for it.
    capacity = 16 + (4 * int(min(delay, horizon)) if delayed else 0)
    heap_ints = np.zeros((capacity, 4), dtype=np.int64)
    heap_rewards = np.zeros(capacity)
    heap_size = 0
    row = np.zeros(4, dtype=np.int64)

    drift_sd = env_params[env.DRIFT_SD]
    churn = env_params[env.CHURN]
    next_change = 0
    next_retire = np.full(n_arms, horizon, dtype=np.int64)
    first_retire = horizon
    if churn > 0.0:
        for k in range(n_arms):
            next_retire[k] = rng.geometric(churn)
        first_retire = next_retire.min()
    mu_star = means.max()
    diagnostics[:] = 0.0
    diagnostics[D_MEAN_MIN] = means.min()
    diagnostics[D_MEAN_MAX] = mu_star

    interval = np.zeros(n_arms)
    pulls_out[:] = 0.0
    last_checkpoint = 0
    checkpoint = 0
    pseudo = 0.0
    regret = 0.0
    best_pulls = 0.0
    tracing = trace.shape[0] > 0
    delivered = 0
    until_refresh = 1
    next_checkpoint = checkpoints[0]

    for t in range(horizon):
        # 1. The environment moves.
        moved = False
        if next_change < change_times.shape[0] and change_times[next_change] == t:
            means[:] = change_means[next_change]
            next_change += 1
            moved = True
        if drift_sd > 0.0 and t > 0:
            for k in range(n_arms):
                means[k] += drift_sd * rng.standard_normal()
                if bernoulli:
                    means[k] = min(max(means[k], 0.0), 1.0)
            moved = True
        if first_retire <= t:
            for k in range(n_arms):
                if next_retire[k] == t:
                    means[k] = rng.beta(env_params[env.CHURN_ALPHA], env_params[env.CHURN_BETA])
                    generation[k] += 1
                    store[:, k] = 0.0
                    store_counts[k] = 0.0
                    n_changed = _mark(changed, changed_stack, n_changed, k)
                    next_retire[k] = t + rng.geometric(churn)
                    diagnostics[D_RETIRED] += 1.0
            first_retire = next_retire.min()
            moved = True
        if moved:
            mu_star = means.max()
            diagnostics[D_MEAN_MIN] = min(diagnostics[D_MEAN_MIN], means.min())
            diagnostics[D_MEAN_MAX] = max(diagnostics[D_MEAN_MAX], mu_star)

        # 2. The policy's view catches up with the store every `batch` steps.
        # A countdown, not t % batch: an integer division per step costs ~3% of the speed.
        until_refresh -= 1
        if until_refresh == 0:
            until_refresh = batch
        if n_changed > 0 and until_refresh == batch:
            revision += 1
            for i in range(n_changed):
                k = changed_stack[i]
                if separate:
                    view[:, k] = store[:, k]
                    view_counts[k] = store_counts[k]
                if thompson:
                    pol.posterior_column(family, view, prior, inv_temperature, k, params)
                changed[k] = False
            n_changed = 0
            if quadrature:
                probabilities = kernels.policy_probabilities(
                    family, view, view_counts, prior, settings, active, tail_table, rng
                )
                cdf = kernels.cumulative(probabilities)
                diagnostics[D_QUADRATURES] += 1.0

        # 3. Decide and draw the reward.
        if quadrature:
            arm = sample_from_cdf(cdf, rng.random())
        elif plain:
            arm = pol.thompson_argmax(family, params, -1, rng)
        elif thompson:
            arm = pol.choose_thompson(family, view, view_counts, params, prior, settings,
                                      racing, tail_table, rng)
        else:
            arm = pol.choose_index_policy(code, family, view, prior, extra, t, rng)
        mean = means[arm]
        if bernoulli:
            reward = 1.0 if rng.random() < mean else 0.0
        else:
            reward = rng.normal(mean, noise[arm])

        # 4. Metrics.
        pseudo += mu_star - mean
        regret += mu_star - reward
        if mean >= mu_star:
            best_pulls += 1.0
        interval[arm] += 1.0
        pulls_out[arm] += 1.0
        if tracing:
            trace[t, T_ARM] = arm
            trace[t, T_REWARD] = reward
            trace[t, T_ARM_MEAN] = mean
            trace[t, T_BEST_MEAN] = mu_star
            trace[t, T_PROPENSITY] = probabilities[arm] if quadrature else np.nan
            trace[t, T_REVISION] = revision
        if t + 1 == next_checkpoint:
            pseudo_out[checkpoint] = pseudo
            regret_out[checkpoint] = regret
            best_out[checkpoint] = best_pulls / (t + 1)
            width = t + 1 - last_checkpoint
            for k in range(n_arms):
                shares_out[checkpoint, k] = interval[k] / width
                interval[k] = 0.0
            if stats_out.shape[0] > 0:
                stats_out[checkpoint, :3] = store
                stats_out[checkpoint, 3] = store_counts
            last_checkpoint = t + 1
            checkpoint += 1
            next_checkpoint = checkpoints[checkpoint] if checkpoint < checkpoints.shape[0] else -1

        # 5. Feedback: now, or into the heap of pending rewards.
        lag = rng.geometric(arrive) - 1 if delayed else 0
        if lag == 0:
            if code == pol.SW_UCB:
                n_changed = _slide_window(generation, ring, ring_state, store, changed,
                                          changed_stack, n_changed, arm, reward)
            _deliver(code, family, store, store_counts, arm, reward, 1.0)
            n_changed = _mark(changed, changed_stack, n_changed, arm)
            delivered += 1
        else:
            if heap_size == heap_ints.shape[0]:
                grown_ints = np.zeros((2 * heap_size, 4), dtype=np.int64)
                grown_rewards = np.zeros(2 * heap_size)
                grown_ints[:heap_size] = heap_ints
                grown_rewards[:heap_size] = heap_rewards
                heap_ints, heap_rewards = grown_ints, grown_rewards
            row[_H_ARRIVAL] = t + lag
            row[_H_SENT] = t
            row[_H_ARM] = arm
            row[_H_GENERATION] = generation[arm]
            _heap_push(heap_ints, heap_rewards, heap_size, row, reward)
            heap_size += 1
        while heap_size > 0 and heap_ints[0, _H_ARRIVAL] <= t:
            got_reward = _heap_pop(heap_ints, heap_rewards, heap_size, row)
            heap_size -= 1
            got_arm = row[_H_ARM]
            if row[_H_GENERATION] != generation[got_arm]:
                diagnostics[D_DISCARDED] += 1.0
                continue
            # Back-dated to the step it happened, like an event's ts in the service.
            weight = 2.0 ** (-(t - row[_H_SENT]) / half_life) if forgetting else 1.0
            if code == pol.SW_UCB:
                n_changed = _slide_window(generation, ring, ring_state, store, changed,
                                          changed_stack, n_changed, got_arm, got_reward)
            _deliver(code, family, store, store_counts, got_arm, got_reward, weight)
            n_changed = _mark(changed, changed_stack, n_changed, got_arm)
            delivered += 1
            diagnostics[D_DELAY_SUM] += t - row[_H_SENT]

        # 6. Forgetting: the store decays by one step.
        if forgetting:
            for k in range(n_arms):
                store[0, k] *= decay
                store[second, k] *= decay
                n_changed = _mark(changed, changed_stack, n_changed, k)

    diagnostics[D_DELIVERED] = delivered
    diagnostics[D_PENDING] = heap_size
    for i in range(heap_size):
        diagnostics[D_PENDING_REWARD] += heap_rewards[i]
    diagnostics[D_REVISIONS] = revision
    final_stats[:3] = store
    final_stats[3] = store_counts


@_jit
def _replicate_plain(
    settings: FloatArray, prior: FloatArray, means: FloatArray, horizon: int,
    checkpoints: IntArray, rng: np.random.Generator, pseudo_out: FloatArray,
    regret_out: FloatArray, best_out: FloatArray, shares_out: FloatArray,
    pulls_out: FloatArray, diagnostics: FloatArray, final_stats: FloatArray,
) -> None:
    """``_replicate`` for its commonest case, draw for draw and number for number: plain
    Thompson (see ``_is_plain``) on a stationary Bernoulli environment from the prior, every
    arm active, each reward delivered at once (batch 1, no delay, no forgetting), no trace.

    Per step it only draws, rewards, counts and updates the pulled arm's Beta shapes; the
    general loop's checks for moving means, refreshes, delays and forgetting, its per-step
    best-arm and interval counts (taken here from the pull counts at each checkpoint, which
    are exact integers) and its precomputed gamma constants (faster on one machine, not on
    another) cost about a sixth of its speed.
    """
    n_arms = means.shape[0]
    inv_temperature = 1.0 / settings[kernels.TEMPERATURE]
    store = np.zeros((3, n_arms))
    counts = np.zeros(n_arms)
    # The posterior's Beta shapes, as pol.posterior_column computes them. Generator.beta
    # draws what the general loop's pol._beta_draw draws from them, value for value.
    alpha = np.full(n_arms, prior[0])
    beta = np.full(n_arms, prior[1])
    mu_star = means.max()
    at_last = np.zeros(n_arms)  # pulls at the last checkpoint
    pseudo = 0.0
    regret = 0.0
    checkpoint = 0
    last_checkpoint = 0
    next_checkpoint = checkpoints[0]
    for t in range(horizon):
        arm = -1
        best = -math.inf
        for k in range(n_arms):  # the first maximum wins, as in pol.thompson_argmax
            draw = rng.beta(alpha[k], beta[k])
            if draw > best:
                best = draw
                arm = k
        mean = means[arm]
        reward = 1.0 if rng.random() < mean else 0.0
        pseudo += mu_star - mean
        regret += mu_star - reward
        counts[arm] += 1.0
        store[0, arm] += reward
        store[1, arm] += 1.0 - reward
        alpha[arm] = prior[0] + store[0, arm] * inv_temperature
        beta[arm] = prior[1] + store[1, arm] * inv_temperature
        if t + 1 == next_checkpoint:
            pseudo_out[checkpoint] = pseudo
            regret_out[checkpoint] = regret
            best_pulls = 0.0
            width = t + 1 - last_checkpoint
            for k in range(n_arms):
                if means[k] >= mu_star:
                    best_pulls += counts[k]
                shares_out[checkpoint, k] = (counts[k] - at_last[k]) / width
                at_last[k] = counts[k]
            best_out[checkpoint] = best_pulls / (t + 1)
            last_checkpoint = t + 1
            checkpoint += 1
            next_checkpoint = checkpoints[checkpoint] if checkpoint < checkpoints.shape[0] else -1
    pulls_out[:] = counts
    diagnostics[:] = 0.0
    diagnostics[D_DELIVERED] = horizon
    diagnostics[D_REVISIONS] = horizon  # the general loop refreshes once per step
    diagnostics[D_MEAN_MIN] = means.min()
    diagnostics[D_MEAN_MAX] = mu_star
    final_stats[:3] = store
    final_stats[3] = counts


@dataclass(frozen=True)
class SimulationResult:
    """Metrics of ``reps`` replications at the checkpoints (rows: replications)."""

    policy: str
    checkpoints: IntArray  # (C,) number of pulls so far, 1-based
    pseudo_regret: FloatArray  # (reps, C) sum of mu*_t - mu_{a_t}
    regret: FloatArray  # (reps, C) sum of mu*_t - r_t
    best_arm_rate: FloatArray  # (reps, C) share of pulls so far on the then-best arm
    shares: FloatArray  # (reps, C, K) pull shares of each arm (slot) since the last checkpoint
    pulls: FloatArray  # (reps, K)
    seconds: float  # wall time


@dataclass(frozen=True)
class Trace:
    """Every step of one replication (the first of :func:`simulate` with the same seed)."""

    arms: IntArray  # (T,)
    rewards: FloatArray  # (T,)
    arm_means: FloatArray  # (T,) mean of the pulled arm
    best_means: FloatArray  # (T,) mu*_t
    propensities: FloatArray  # (T,) allocation probability of the pulled arm (NaN: fast path)
    revisions: IntArray  # (T,) how many times the policy's view had changed at the decision
    stats: FloatArray  # (3, K) final store statistics (the service's layout)
    counts: FloatArray  # (K,) final raw observation counts
    delivered: int  # rewards written to the store
    pending: int  # rewards still in flight at the end
    pending_reward: float  # their sum
    discarded: int  # rewards dropped because their arm had retired
    delay_sum: float  # sum over delivered rewards of their delay in steps
    retired: int  # arms replaced by churn
    quadratures: int  # allocation-probability computations (service path)
    mean_min: float  # smallest arm mean seen
    mean_max: float  # largest arm mean seen


def log_checkpoints(horizon: int, count: int = 100) -> IntArray:
    """About ``count`` log-spaced step counts from 1 to ``horizon`` (both included), unique."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    steps = np.unique(np.round(np.geomspace(1.0, horizon, count)).astype(np.int64))
    steps[-1] = horizon
    return steps


def _validated_checkpoints(checkpoints: npt.ArrayLike | None, horizon: int) -> IntArray:
    if checkpoints is None:
        return log_checkpoints(horizon)
    raw = np.asarray(checkpoints)
    steps = raw.astype(np.int64)
    if raw.ndim != 1 or raw.shape[0] < 1 or not np.array_equal(raw, steps):
        raise ValueError("checkpoints must be a non-empty 1-d array of integer step counts")
    if np.any(np.diff(steps) <= 0) or steps[0] < 1 or steps[-1] > horizon:
        raise ValueError(f"checkpoints must increase strictly within [1, {horizon}]")
    return np.ascontiguousarray(steps)


@dataclass(frozen=True)
class _Run:
    policy: pol.PolicyArrays
    environment: env.EnvironmentArrays
    horizon: int
    batch: int
    delay: float
    checkpoints: IntArray


def _prepare(policy: PolicySpec, environment: Environment, horizon: int, batch: int,
             delay: float, checkpoints: npt.ArrayLike | None) -> _Run:
    if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    if isinstance(batch, bool) or int(batch) != batch or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    if not (math.isfinite(delay) and delay >= 0.0):
        raise ValueError(f"delay must be a finite number of steps >= 0, got {delay!r}")
    arrays = environment.arrays()
    return _Run(
        policy.arrays(arrays.family, environment.n_arms, int(horizon)),
        arrays,
        int(horizon),
        int(batch),
        float(delay),
        _validated_checkpoints(checkpoints, int(horizon)),
    )


def _run_one(run: _Run, rng: np.random.Generator, pseudo: FloatArray, regret: FloatArray,
             best: FloatArray, shares: FloatArray, pulls: FloatArray, trace_rows: FloatArray,
             diagnostics: FloatArray, final_stats: FloatArray) -> None:
    p, e = run.policy, run.environment
    n_arms = e.means.shape[0]
    if trace_rows.shape[0] == 0 and _is_plain(run):
        _replicate_plain(p.settings, p.prior, e.means, run.horizon, run.checkpoints, rng,
                         pseudo, regret, best, shares, pulls, diagnostics, final_stats)
        return
    _replicate(
        p.code, p.settings, p.prior, p.extra, e.family, e.means, e.change_times, e.change_means,
        e.params, np.full(n_arms, e.params[env.NOISE_SD]), np.zeros((4, n_arms)),
        np.ones(n_arms, dtype=np.bool_), run.horizon, run.batch, run.delay, run.checkpoints,
        student_t_tail_table(), rng, pseudo, regret, best, shares, pulls, trace_rows,
        diagnostics, final_stats, np.zeros((0, 4, n_arms)),
    )


def _is_plain(run: _Run) -> bool:
    """Whether ``_replicate_plain`` computes this run (the same numbers, faster)."""
    p, e, settings = run.policy, run.environment, run.policy.settings
    half_life = p.extra[pol.X_HALF_LIFE]
    return bool(
        p.code == pol.THOMPSON and e.family == BERNOULLI
        and p.extra[pol.X_QUADRATURE] == 0.0
        and settings[kernels.MIN_SHARE] == 0.0 and settings[kernels.MAX_SHARE] >= 1.0
        and settings[kernels.EPSILON] == 0.0 and settings[kernels.WARMUP] == 0.0
        and math.isnan(settings[kernels.TOP_TWO])
        and not settings[kernels.CONTROL_INDEX] >= 0.0
        and not (half_life > 0.0 and math.isfinite(half_life))
        and e.change_times.shape[0] == 0
        and e.params[env.DRIFT_SD] == 0.0 and e.params[env.CHURN] == 0.0
        and run.batch == 1 and run.delay == 0.0
    )


def _generators(seed: int, stop: int, start: int = 0) -> list[np.random.Generator]:
    """Generators of replications start .. stop-1: replication i gets child i of
    ``SeedSequence(seed)`` (what ``spawn`` would give it), whatever the range asked for."""
    return [np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
            for i in range(start, stop)]


def run_replications(replicate: Callable[[int], None], reps: int, threads: int | None,
                     progress: Callable[[int], None] | None) -> None:
    """``replicate(i)`` for i in 0 .. reps-1 on up to ``threads`` threads (default: all cores).

    Each replication writes its own rows, so the order does not matter. ``progress`` is called
    from this thread with 1 per finished replication; a failure cancels the ones not started.
    """
    workers = min(threads or os.cpu_count() or 1, reps)
    if workers == 1:
        for i in range(reps):
            replicate(i)
            if progress is not None:
                progress(1)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(replicate, i) for i in range(reps)]
        try:
            for future in as_completed(futures):
                future.result()
                if progress is not None:
                    progress(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def simulate(
    policy: PolicySpec,
    environment: Environment,
    *,
    horizon: int,
    reps: int,
    seed: int,
    batch: int = 1,
    delay: float = 0.0,
    checkpoints: npt.ArrayLike | None = None,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Run ``reps`` replications of ``policy`` on ``environment`` for ``horizon`` steps.

    ``threads`` (default: all cores) only changes the speed, never the numbers. ``progress``
    is called from this thread with the number of replications just finished.
    """
    if isinstance(reps, bool) or int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be an integer >= 1, got {reps!r}")
    return simulate_chunk(policy, environment, horizon=horizon, seed=seed, start=0,
                          stop=int(reps), batch=batch, delay=delay, checkpoints=checkpoints,
                          threads=threads, progress=progress)


def simulate_chunk(
    policy: PolicySpec,
    environment: Environment,
    *,
    horizon: int,
    seed: int,
    start: int,
    stop: int,
    batch: int = 1,
    delay: float = 0.0,
    checkpoints: npt.ArrayLike | None = None,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Replications ``start`` .. ``stop``-1 of the run :func:`simulate` makes with the same
    arguments (and any ``reps >= stop``): its rows ``start:stop``, bit for bit.

    Replication i depends only on ``seed`` and i, so a run cut into chunks computed anywhere
    (threads, processes, machines) and put back in row order is the run itself. An empty
    chunk (``start == stop``) only validates the arguments.
    """
    run = _prepare(policy, environment, horizon, batch, delay, checkpoints)
    for name, value in (("start", start), ("stop", stop)):
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if stop < start:
        raise ValueError(f"stop must be >= start, got start={start!r}, stop={stop!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads!r}")
    reps = int(stop) - int(start)
    n_checkpoints, n_arms = run.checkpoints.shape[0], environment.n_arms
    pseudo = np.zeros((reps, n_checkpoints))
    regret = np.zeros((reps, n_checkpoints))
    best = np.zeros((reps, n_checkpoints))
    shares = np.zeros((reps, n_checkpoints, n_arms))
    pulls = np.zeros((reps, n_arms))
    diagnostics = np.zeros((reps, N_DIAGNOSTICS))
    final_stats = np.zeros((reps, 4, n_arms))
    no_trace = np.zeros((0, N_TRACE))
    generators = _generators(seed, int(stop), int(start))

    def replicate(i: int) -> None:
        _run_one(run, generators[i], pseudo[i], regret[i], best[i], shares[i], pulls[i],
                 no_trace, diagnostics[i], final_stats[i])

    started = time.perf_counter()
    if reps > 0:
        run_replications(replicate, reps, threads, progress)
    return SimulationResult(
        policy=policy.label,
        checkpoints=run.checkpoints,
        pseudo_regret=pseudo,
        regret=regret,
        best_arm_rate=best,
        shares=shares,
        pulls=pulls,
        seconds=time.perf_counter() - started,
    )


def trace(policy: PolicySpec, environment: Environment, *, horizon: int, seed: int,
          batch: int = 1, delay: float = 0.0) -> Trace:
    """One replication step by step: the first replication of :func:`simulate` (same seed)."""
    run = _prepare(policy, environment, horizon, batch, delay, None)
    n_checkpoints, n_arms = run.checkpoints.shape[0], environment.n_arms
    rows = np.zeros((run.horizon, N_TRACE))
    diagnostics = np.zeros(N_DIAGNOSTICS)
    final_stats = np.zeros((4, n_arms))
    _run_one(run, _generators(seed, 1)[0], np.zeros(n_checkpoints), np.zeros(n_checkpoints),
             np.zeros(n_checkpoints), np.zeros((n_checkpoints, n_arms)), np.zeros(n_arms), rows,
             diagnostics, final_stats)
    return Trace(
        arms=rows[:, T_ARM].astype(np.int64),
        rewards=rows[:, T_REWARD].copy(),
        arm_means=rows[:, T_ARM_MEAN].copy(),
        best_means=rows[:, T_BEST_MEAN].copy(),
        propensities=rows[:, T_PROPENSITY].copy(),
        revisions=rows[:, T_REVISION].astype(np.int64),
        stats=final_stats[:3].copy(),
        counts=final_stats[3].copy(),
        delivered=int(diagnostics[D_DELIVERED]),
        pending=int(diagnostics[D_PENDING]),
        pending_reward=float(diagnostics[D_PENDING_REWARD]),
        discarded=int(diagnostics[D_DISCARDED]),
        delay_sum=float(diagnostics[D_DELAY_SUM]),
        retired=int(diagnostics[D_RETIRED]),
        quadratures=int(diagnostics[D_QUADRATURES]),
        mean_min=float(diagnostics[D_MEAN_MIN]),
        mean_max=float(diagnostics[D_MEAN_MAX]),
    )
