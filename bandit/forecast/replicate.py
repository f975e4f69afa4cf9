"""The replication loop: one simulated run of the service's policy, in numba.

One replication (:func:`replicate`, jitted, ``nogil``) is, for t = 0 .. T-1:

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
   event's ``ts``: the ``bandit.policy.posteriors.forget`` semantics one step at a time.

Thompson sampling runs the service's code: with floors or caps on, paused arms (or
``quadrature=1``), the allocation probabilities are ``allocation.policy_probabilities`` of the
view, recomputed whenever the view changes, and each decision is the service's ``sample_arms``
search of their ``cumulative``; otherwise decisions are drawn by sampling with the exact same
distribution (:func:`bandit.forecast.thompson.choose_thompson`), which is ~100x cheaper than
one quadrature. The other policy codes are the simulator's baselines
(:mod:`bandit.forecast.index_policies`).

The advisor's forecast (:mod:`bandit.forecast.forecast`) starts it from a live experiment's
statistics and reads the store at every checkpoint; the simulator (:mod:`simulations.engine`)
starts it from the prior and reads regret, shares and, when tracing, every step.
"""

from __future__ import annotations

import math

import numpy as np

from bandit.forecast.codes import (
    CHURN,
    CHURN_ALPHA,
    CHURN_BETA,
    D_DELAY_SUM,
    D_DELIVERED,
    D_DISCARDED,
    D_MEAN_MAX,
    D_MEAN_MIN,
    D_PENDING,
    D_PENDING_REWARD,
    D_QUADRATURES,
    D_RETIRED,
    D_REVISIONS,
    DRIFT_SD,
    SW_UCB,
    T_ARM,
    T_ARM_MEAN,
    T_BEST_MEAN,
    T_PROPENSITY,
    T_REVISION,
    T_REWARD,
    THOMPSON,
    X_HALF_LIFE,
    X_QUADRATURE,
    X_TAU,
)
from bandit.forecast.feedback import (
    H_ARM,
    H_ARRIVAL,
    H_GENERATION,
    H_SENT,
    N_HEAP_COLUMNS,
    deliver,
    heap_pop,
    heap_push,
    mark,
    slide_window,
)
from bandit.forecast.index_policies import choose_index_policy
from bandit.forecast.thompson import (
    N_PARAMS,
    choose_thompson,
    posterior_column,
    sample_from_cdf,
    thompson_argmax,
)
from bandit.jit import jit
from bandit.policy import allocation, layout, sampling
from bandit.policy.layout import BERNOULLI, BoolArray, FloatArray, IntArray

__all__ = ["replicate"]


@jit
def replicate(
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

    thompson = code == THOMPSON
    quadrature = thompson and (
        extra[X_QUADRATURE] > 0.0
        or not all_active
        or settings[layout.MIN_SHARE] > 0.0
        or settings[layout.MAX_SHARE] < 1.0
    )
    plain = thompson and not quadrature and (
        settings[layout.EPSILON] == 0.0
        and settings[layout.WARMUP] == 0.0
        and math.isnan(settings[layout.TOP_TWO])
        and not settings[layout.CONTROL_INDEX] >= 0.0
    )
    inv_temperature = 1.0 / settings[layout.TEMPERATURE]
    params = np.zeros((N_PARAMS, n_arms))
    active = active_in.copy()
    racing = active_in.copy()
    if thompson and settings[layout.CONTROL_INDEX] >= 0.0:
        racing[int(settings[layout.CONTROL_INDEX])] = False
    probabilities = np.zeros(n_arms)
    cdf = np.ones(n_arms)
    half_life = extra[X_HALF_LIFE]
    forgetting = half_life > 0.0 and math.isfinite(half_life)
    decay = 2.0 ** (-1.0 / half_life) if forgetting else 1.0
    second = 1 if bernoulli else 2

    # SW-UCB: ring buffer of the last tau delivered observations.
    window = int(extra[X_TAU]) if code == SW_UCB else 1
    ring = np.zeros((window, 3))  # arm, generation, reward
    ring_state = np.zeros(2, dtype=np.int64)  # head, size

    # Delayed rewards: a min-heap on arrival step, grown by doubling when full.
    delayed = delay > 0.0
    arrive = 1.0 / (1.0 + delay)
    # Sized for the typical backlog, and never above the horizon (at most one pending reward per
    # step): a delay far beyond the horizon must not allocate memory for it.
    capacity = 16 + (4 * int(min(delay, horizon)) if delayed else 0)
    heap_ints = np.zeros((capacity, N_HEAP_COLUMNS), dtype=np.int64)
    heap_rewards = np.zeros(capacity)
    heap_size = 0
    row = np.zeros(N_HEAP_COLUMNS, dtype=np.int64)

    drift_sd = env_params[DRIFT_SD]
    churn = env_params[CHURN]
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
                    means[k] = rng.beta(env_params[CHURN_ALPHA], env_params[CHURN_BETA])
                    generation[k] += 1
                    store[:, k] = 0.0
                    store_counts[k] = 0.0
                    n_changed = mark(changed, changed_stack, n_changed, k)
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
                    posterior_column(family, view, prior, inv_temperature, k, params)
                changed[k] = False
            n_changed = 0
            if quadrature:
                probabilities = allocation.policy_probabilities(
                    family, view, view_counts, prior, settings, active, tail_table, rng
                )
                cdf = sampling.cumulative(probabilities)
                diagnostics[D_QUADRATURES] += 1.0

        # 3. Decide and draw the reward.
        if quadrature:
            arm = sample_from_cdf(cdf, rng.random())
        elif plain:
            arm = thompson_argmax(family, params, -1, rng)
        elif thompson:
            arm = choose_thompson(family, view, view_counts, params, prior, settings,
                                  racing, tail_table, rng)
        else:
            arm = choose_index_policy(code, family, view, prior, extra, t, rng)
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
            if code == SW_UCB:
                n_changed = slide_window(generation, ring, ring_state, store, changed,
                                          changed_stack, n_changed, arm, reward)
            deliver(code, family, store, store_counts, arm, reward, 1.0)
            n_changed = mark(changed, changed_stack, n_changed, arm)
            delivered += 1
        else:
            if heap_size == heap_ints.shape[0]:
                grown_ints = np.zeros((2 * heap_size, N_HEAP_COLUMNS), dtype=np.int64)
                grown_rewards = np.zeros(2 * heap_size)
                grown_ints[:heap_size] = heap_ints
                grown_rewards[:heap_size] = heap_rewards
                heap_ints, heap_rewards = grown_ints, grown_rewards
            row[H_ARRIVAL] = t + lag
            row[H_SENT] = t
            row[H_ARM] = arm
            row[H_GENERATION] = generation[arm]
            heap_push(heap_ints, heap_rewards, heap_size, row, reward)
            heap_size += 1
        while heap_size > 0 and heap_ints[0, H_ARRIVAL] <= t:
            got_reward = heap_pop(heap_ints, heap_rewards, heap_size, row)
            heap_size -= 1
            got_arm = row[H_ARM]
            if row[H_GENERATION] != generation[got_arm]:
                diagnostics[D_DISCARDED] += 1.0
                continue
            # Back-dated to the step it happened, like an event's ts in the service.
            weight = 2.0 ** (-(t - row[H_SENT]) / half_life) if forgetting else 1.0
            if code == SW_UCB:
                n_changed = slide_window(generation, ring, ring_state, store, changed,
                                          changed_stack, n_changed, got_arm, got_reward)
            deliver(code, family, store, store_counts, got_arm, got_reward, weight)
            n_changed = mark(changed, changed_stack, n_changed, got_arm)
            delivered += 1
            diagnostics[D_DELAY_SUM] += t - row[H_SENT]

        # 6. Forgetting: the store decays by one step.
        if forgetting:
            for k in range(n_arms):
                store[0, k] *= decay
                store[second, k] *= decay
                n_changed = mark(changed, changed_stack, n_changed, k)

    diagnostics[D_DELIVERED] = delivered
    diagnostics[D_PENDING] = heap_size
    for i in range(heap_size):
        diagnostics[D_PENDING_REWARD] += heap_rewards[i]
    diagnostics[D_REVISIONS] = revision
    final_stats[:3] = store
    final_stats[3] = store_counts
