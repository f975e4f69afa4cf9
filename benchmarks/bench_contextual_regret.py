"""Contextual decisions (issue 17): regret of the service's contextual Thompson sampling against
the Open Bandit Pipeline's ``LinTS`` on obp's synthetic logistic problem, and decision speed.

Run: ``python -m benchmarks.bench_contextual_regret [--rounds 10000] [--seeds 20]
[--processes 2] [--skip-regret] [--skip-speed]``. Needs obp (``pip install --no-deps obp
scikit-learn``; never a project dependency); exits with a message when it is missing.

1. Equivalence: for every seed, the stream of ``simulations.contextual_worlds``' ``obp-logistic``
   world against ``SyntheticBanditDataset(n_actions=10, dim_context=5, reward_type="binary",
   reward_function=logistic_reward_function, random_state=seed)
   .obtain_batch_bandit_feedback(rounds)``: contexts and expected rewards must agree within
   1e-12 (then every policy runs on that one stream; the potential outcomes of every arm are
   drawn as the world draws them, since obp samples the logged action's reward only).
2. Regret: mean cumulative pseudo-regret over the seeds at T rounds (± standard error) of the
   service's contextual Thompson sampling (``simulations.contextual``: the world's LinearModel,
   intercept plus the five contexts on the fixed scale [-4, 4], the service's default prior),
   obp's ``LinTS`` with its defaults (dim 5, the raw contexts, no intercept; ridge 1 and noise
   variance 1) and the same ``LinTS`` given our feature vector x (dim 6, with the intercept),
   LinUCB (alpha 1, on x), the service's context-free Thompson sampling and uniform random;
   with immediate feedback, rewards delayed by 100 rounds, and updates in batches of 100
   (obp's ``update_params`` is called for each reward when it is delivered, as ours learns).
   Bars: ours <= 1.05x obp's LinTS (defaults), <= 0.5x uniform, < context-free Thompson.
3. Speed: obp's ``LinTS.select_action`` per call at K=10, d=16 and K=20, d=32 against
   ``ContextualPosterior.probabilities`` plus drawing the arm (``cumulative``, ``sample_one``)
   on the same observations (2,000 random ones), after a JIT warm-up. The claim: >= 100x.
   Also printed: ``probabilities`` alone, and ``draw_scores`` + argmax (one score per arm,
   the plain Thompson step, without the propensity and the exploration settings).
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import importlib.util
import math
import sys
import time
import types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bandit.features import Feature, LinearModel
from bandit.policy import ContextualPosterior, PolicySettings, cumulative, sample_one
from bandit.policy.contextual import add_observations, draw_scores, stats_width
from bandit.policy.layout import FloatArray, IntArray
from simulations.contextual import encode, parse_contextual_policy, replicate, run_stream
from simulations.contextual_worlds import ContextualWorld, Stream

N_ARMS, DIM = 10, 5
SETTINGS = {"immediate": (0, 1), "delay 100": (100, 1), "batch 100": (0, 100)}
OURS = ("thompson", "linucb", "context-free-thompson", "uniform")
OBP = ("obp LinTS (defaults)", "obp LinTS (our x)")
LABELS = {"thompson": "ours: contextual Thompson", "linucb": "LinUCB (alpha 1, our x)",
          "context-free-thompson": "context-free Thompson", "uniform": "uniform random"}


def obp_package(name: str) -> types.ModuleType:
    """Register obp's package ``name`` without running its __init__ (see :func:`obp`); also
    used by ``benchmarks.ope_golden``."""
    root = Path(str(importlib.import_module("obp").__file__)).parent
    package = types.ModuleType(name)
    package.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
    sys.modules[name] = package
    return package


@functools.cache
def obp() -> types.SimpleNamespace:
    """obp's ``LinTS``, ``SyntheticBanditDataset`` and ``logistic_reward_function``.

    obp 0.4's package ``__init__`` files import every module (the real dataset needs pandas,
    the neural offline learners torch), and ``obp.utils`` imports torch and pandas at its top
    for its tensor checks and bootstrap: none of which the three need. Without them, the
    packages ``obp.policy`` and ``obp.dataset`` are registered without running their
    ``__init__`` and obp's modules are then imported as they are, except ``obp.utils``, which
    is compiled from obp's own ``utils.py`` keeping only the two functions the dataset imports,
    ``sigmoid`` and ``softmax``, and their imports (nothing is rewritten).
    """
    try:
        dataset = importlib.import_module("obp.dataset")
        lints = importlib.import_module("obp.policy").LinTS
    except ModuleNotFoundError as error:
        if error.name not in ("torch", "pandas", "seaborn", "matplotlib"):
            raise
        source = Path(str(importlib.import_module("obp").__file__)).parent / "utils.py"
        tree = ast.parse(source.read_text())
        tree.body = [node for node in tree.body
                     if ast.unparse(node) in ("import numpy as np",
                                              "from typing import Dict, Optional, Union")
                     or (isinstance(node, ast.FunctionDef)
                         and node.name in ("sigmoid", "softmax"))]
        utils = types.ModuleType("obp.utils")
        exec(compile(tree, str(source), "exec"), utils.__dict__)
        sys.modules["obp.utils"] = utils
        policy = obp_package("obp.policy")
        base = importlib.import_module("obp.policy.base")
        policy.BaseContextFreePolicy = base.BaseContextFreePolicy  # type: ignore[attr-defined]
        policy.BaseContextualPolicy = base.BaseContextualPolicy  # type: ignore[attr-defined]
        lints = importlib.import_module("obp.policy.linear").LinTS
        obp_package("obp.dataset")
        dataset = importlib.import_module("obp.dataset.synthetic")
    return types.SimpleNamespace(LinTS=lints,
                                 SyntheticBanditDataset=dataset.SyntheticBanditDataset,
                                 logistic_reward_function=dataset.logistic_reward_function)



def obp_stream(rounds: int, seed: int) -> tuple[FloatArray, FloatArray]:
    """Contexts and expected rewards of obp's own synthetic dataset."""
    peer = obp()
    dataset = peer.SyntheticBanditDataset(
        n_actions=N_ARMS, dim_context=DIM, reward_type="binary",
        reward_function=peer.logistic_reward_function, random_state=seed)
    feedback = dataset.obtain_batch_bandit_feedback(n_rounds=rounds)
    return np.asarray(feedback["context"]), np.asarray(feedback["expected_reward"])


def obp_regret(stream: Stream, contexts: FloatArray, seed: int, delay: int,
               batch: int) -> FloatArray:
    """Per-round regret of obp's LinTS (defaults but the dimension) fed ``contexts``."""
    policy = obp().LinTS(dim=contexts.shape[1], n_actions=N_ARMS, random_state=seed)

    def choose(t: int) -> int:
        return int(policy.select_action(contexts[t:t + 1])[0])

    def learn(start: int, stop: int, arms: IntArray) -> None:
        for t, arm in zip(range(start, stop), arms.tolist(), strict=True):
            policy.update_params(action=arm, reward=float(stream.rewards[t, arm]),
                                 context=contexts[t:t + 1])

    return run_stream(choose, learn, stream, delay=delay, batch=batch)[1]


def one_seed(seed: int, rounds: int) -> dict[str, Any]:
    """Every policy under every feedback setting on seed ``seed``'s stream."""
    world = ContextualWorld("obp-logistic", n_arms=N_ARMS, dim=DIM)
    stream = world.stream(rounds, seed)
    contexts, expected = obp_stream(rounds, seed)
    gap = max(float(np.abs(contexts - stream.contexts).max()),
              float(np.abs(expected - stream.expected).max()))
    xs = encode(world, world.model(), stream)
    totals: dict[str, dict[str, float]] = {}
    for setting, (delay, batch) in SETTINGS.items():
        row = {}
        for name in OURS:
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
            row[LABELS[name]] = float(replicate(parse_contextual_policy(name), world, stream,
                                                xs, delay=delay, batch=batch, rng=rng).sum())
        row[OBP[0]] = float(obp_regret(stream, stream.contexts, seed, delay, batch).sum())
        row[OBP[1]] = float(obp_regret(stream, xs, seed, delay, batch).sum())
        totals[setting] = row
    return {"seed": seed, "gap": gap, "totals": totals}


def regret_tables(rounds: int, seeds: int, processes: int) -> bool:
    print(f"(1, 2) obp's SyntheticBanditDataset(n_actions={N_ARMS}, dim_context={DIM}, binary, "
          f"logistic_reward_function): {rounds:,} rounds x {seeds} seeds (random_state = seed),"
          " the same stream for every policy", flush=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(processes) as pool:
        runs = list(pool.map(one_seed, range(seeds), [rounds] * seeds))
    gap = max(run["gap"] for run in runs)
    print(f"largest |difference| between obp's contexts and expected rewards and the "
          f"obp-logistic world's, over all seeds: {gap:.2e} (must be <= 1e-12)")
    passed = bool(gap <= 1e-12)
    for setting in SETTINGS:
        totals = {label: np.array([run["totals"][setting][label] for run in runs])
                  for label in runs[0]["totals"][setting]}
        means = {label: float(v.mean()) for label, v in totals.items()}
        ours, lints = means[LABELS["thompson"]], means[OBP[0]]
        print(f"\n{setting}: mean cumulative regret at T={rounds:,} ± standard error")
        print(f"  {'policy':30} {'regret':>9} {'± se':>7} {'/ obp LinTS':>12} {'/ uniform':>10}")
        for label, values in sorted(totals.items(), key=lambda item: means[item[0]]):
            se = float(values.std(ddof=1) / math.sqrt(values.shape[0]))
            print(f"  {label:30} {means[label]:9.1f} {se:7.1f} {means[label] / lints:12.3f} "
                  f"{means[label] / means[LABELS['uniform']]:10.3f}")
        bars = (("<= 1.05x obp LinTS", ours <= 1.05 * lints),
                ("<= 0.5x uniform", ours <= 0.5 * means[LABELS["uniform"]]),
                ("< context-free Thompson", ours < means[LABELS["context-free-thompson"]]))
        print("  bars: " + ", ".join(f"{name} {'met' if ok else 'NOT MET'}"
                                     for name, ok in bars))
        passed = passed and all(ok for _, ok in bars)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return passed


def speed(n_arms: int, d: int, observations: int = 2000) -> dict[str, float]:
    """Microseconds per decision on the same observations: obp's LinTS.select_action; ours,
    the allocate path (probabilities + draw), its probabilities alone, and one score draw per
    arm with the argmax (``draw_scores``: plain Thompson, no propensity, no settings)."""
    rng = np.random.default_rng(7)
    model = LinearModel(features=tuple(Feature(f"f{j}", "numeric", scale=(0.0, 1.0))
                                       for j in range(d - 1)))
    xs = np.hstack([np.ones((observations, 1)), rng.random((observations, d - 1))])
    arms = rng.integers(0, n_arms, observations)
    rewards = (rng.random(observations) < 0.3).astype(np.float64)
    rows = np.zeros((n_arms, stats_width(d)))
    add_observations(rows, arms, xs, rewards, np.ones(observations))
    posterior = ContextualPosterior.build(model, rows, np.bincount(arms, minlength=n_arms)
                                          .astype(np.float64), PolicySettings(),
                                          np.ones(n_arms, dtype=np.bool_))
    lints = obp().LinTS(dim=d, n_actions=n_arms, random_state=0)
    for x, arm, reward in zip(xs, arms.tolist(), rewards.tolist(), strict=True):
        lints.update_params(action=arm, reward=reward, context=x[None, :])
    probes = np.hstack([np.ones((500, 1)), rng.random((500, d - 1))])
    p = posterior

    def allocate() -> None:
        for x in probes:
            sample_one(cumulative(p.probabilities(x)).tolist(), rng.random())

    def probabilities() -> None:
        for x in probes:
            p.probabilities(x)

    def draw() -> None:
        for x in probes:
            int(np.argmax(draw_scores(x, p.means, p.factors, p.sigma2, rng)))

    def theirs() -> None:
        for x in probes[:100]:
            lints.select_action(x[None, :])

    allocate()  # JIT warm-up (and the numba cache's load)
    draw()
    timings = {}
    for name, run, calls in (("obp", theirs, 100), ("ours", allocate, 500),
                             ("probabilities", probabilities, 500), ("draw", draw, 500)):
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            run()
            best = min(best, (time.perf_counter() - start) / calls)
        timings[name] = best * 1e6
    return timings


def speed_table() -> bool:
    print("\n(3) one decision for a context, microseconds (best of 3 runs; the same 2,000 "
          "observations in both)")
    print("  ours: probabilities(x) + cumulative + sample_one (the allocate path); "
          "probabilities: alone;\n  draw: draw_scores + argmax (plain Thompson: no "
          "propensity, no exploration settings)")
    print(f"  {'K':>3} {'d':>3} {'obp LinTS':>10} {'ours':>7} {'speed-up':>9} "
          f"{'probabilities':>14} {'draw':>6} {'speed-up':>9}")
    passed = True
    for n_arms, d in ((10, 16), (20, 32)):
        t = speed(n_arms, d)
        print(f"  {n_arms:3} {d:3} {t['obp']:10.1f} {t['ours']:7.1f} "
              f"{t['obp'] / t['ours']:8.1f}x {t['probabilities']:14.1f} {t['draw']:6.1f} "
              f"{t['obp'] / t['draw']:8.1f}x")
        passed = passed and bool(t["obp"] / t["ours"] >= 100.0)
    print(f"  claim >= 100x (ours, the allocate path): {'met' if passed else 'NOT MET'}")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--skip-regret", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    arguments = parser.parse_args(argv)
    if importlib.util.find_spec("obp") is None or importlib.util.find_spec("sklearn") is None:
        print("bench_contextual_regret needs the Open Bandit Pipeline: pip install --no-deps obp "
              "scikit-learn (a peer for comparison, never a project dependency)",
              file=sys.stderr)
        return 2
    passed = True
    if not arguments.skip_regret:
        passed = regret_tables(arguments.rounds, arguments.seeds, arguments.processes)
    if not arguments.skip_speed:
        passed = speed_table() and passed
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
