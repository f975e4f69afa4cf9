"""``bandit simulate``: run policies against environments, or replay logged data."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simulations.data import OBD_ATTRIBUTION, OBD_CAMPAIGNS

if TYPE_CHECKING:
    from distributed import Client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    problem = parser.add_argument_group("problem (one of --means or --scenario)")
    problem.add_argument("--means", help="comma-separated true means of the arms, e.g. 0.5,0.48")
    problem.add_argument("--scenario", help="a built-in scenario (see --list)")
    problem.add_argument("--reward", choices=["bernoulli", "gaussian"], default="bernoulli")
    problem.add_argument("--noise-sd", type=float, default=1.0,
                         help="reward noise of gaussian arms (default 1)")
    problem.add_argument("--drift-sd", type=float, default=0.0,
                         help="per-step random-walk drift of every mean (default 0)")
    problem.add_argument("--churn", type=float, default=0.0,
                         help="per-step probability that an arm is replaced by a fresh one")
    run = parser.add_argument_group("run")
    run.add_argument("--horizon", type=int, help="steps per replication")
    run.add_argument("--reps", type=int, default=100, help="replications (default 100)")
    run.add_argument("--policy", action="append", dest="policies", metavar="SPEC",
                     help="policy to run, repeatable: thompson, ucb1, kl-ucb, bayes-ucb, "
                          "epsilon-greedy, uniform, top-two, discounted-thompson, sw-ucb; "
                          "settings after a colon: thompson:epsilon=0.1,min_share=0.02")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--batch", type=int, help="update posteriors every B steps")
    run.add_argument("--delay", type=float, help="mean reward delay in steps (geometric)")
    run.add_argument("--threads", type=int, help="worker threads (default: all cores); with "
                                                  "--dask, the local cluster's threads")
    run.add_argument("--dask", nargs="?", const="local", metavar="ADDRESS",
                     help="run the replications on a Dask cluster: a local one (processes on "
                          "this machine) with no ADDRESS, else the scheduler at ADDRESS, e.g. "
                          "tcp://scheduler:8786 (every worker needs this version of the "
                          "project installed); the numbers are those of the run without --dask")
    run.add_argument("--sweep", action="append", metavar="NAME=V1,V2,...",
                     help="grid over a setting of the (single) policy, repeatable; 'none' "
                          "for null, e.g. --sweep epsilon=0,0.05,0.1 --sweep half_life=none,1000")
    run.add_argument("--out", type=Path, default=Path("simulation-results"),
                     help="output directory (default ./simulation-results)")
    run.add_argument("--list", action="store_true", help="list the built-in scenarios and exit")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay = parser.add_subparsers(dest="simulate_command",
                                   metavar="{replay,contextual,guardrails}")
    replay_parser = replay.add_parser(
        "replay", help="estimate policies' value from logged data: your experiment's decision "
                       "log (--log), or the Open Bandit Dataset sample",
        description="Off-policy evaluation. With --log FILE: target policies evaluated on an "
                    "experiment's decision log (bandit log export, Parquet or JSON lines) with "
                    "IPS, SNIPS, DM, DR, Switch-DR and DRos, and the tuning advisor's forecast "
                    "beside them. Without: the Open Bandit Dataset sample, which ships with "
                    "the package.",
        epilog=OBD_ATTRIBUTION)
    replay_parser.add_argument("--log", type=Path, metavar="FILE",
                               help="a decision log from bandit log export (.parquet or "
                                    ".jsonl) to evaluate target policies on")
    replay_parser.add_argument("--target", action="append", dest="targets", metavar="SPEC",
                               help="with --log, repeatable: fixed:ARM, uniform, thompson, "
                                    "thompson:epsilon=0.1,min_share=0.02 (the service's "
                                    "exploration settings), contextual[:settings] (default: "
                                    "uniform, thompson, thompson:epsilon=0.1, and contextual "
                                    "for a log with features)")
    replay_parser.add_argument("--reward", choices=["bernoulli", "gaussian"],
                               help="with --log: the reward kind (default: the file's "
                                    "metadata, else inferred: all rewards 0 or 1 is bernoulli)")
    replay_parser.add_argument("--folds", type=int, default=5,
                               help="with --log: cross-fitting folds of the reward model "
                                    "(default 5)")
    replay_parser.add_argument("--tau", type=float, default=None,
                               help="with --log: Switch-DR's weight threshold (default 10)")
    replay_parser.add_argument("--lambda", type=float, default=None, dest="lambda_",
                               help="with --log: DRos's shrinkage (default 100)")
    replay_parser.add_argument("--forecast-reps", type=int, default=100,
                               help="with --log: the advisor forecast's plausible futures "
                                    "(default 100)")
    replay_parser.add_argument("--data-dir", type=Path,
                               help="a directory with OBD csv files laid out as the sample "
                                    "(random_<campaign>.csv, bts_<campaign>.csv), e.g. the "
                                    "full dataset (default: the shipped sample)")
    replay_parser.add_argument("--campaign", choices=OBD_CAMPAIGNS, default="men")
    replay_parser.add_argument("--position", type=int,
                               help="the slot: 1, 2 or 3 in the OBD sample (default 1); with "
                                    "--log, the position in a slate (default 0)")
    replay_parser.add_argument("--seed", type=int, default=0)
    replay_parser.add_argument("--out", type=Path,
                               help="also write replay.json here (with --log: "
                                    "evaluation.json and evaluation.png)")
    replay_parser.add_argument("--json", action="store_true", help="print JSON, not a table")
    replay_parser.add_argument("--contextual", action="store_true",
                               help="instead: learn the service's contextual Thompson sampling "
                                    "(user features) on the first part of the random log and "
                                    "estimate its click rate on the rest (IPS, SNIPS)")
    replay_parser.add_argument("--train-share", type=float, default=0.5,
                               help="with --log or --contextual: the share of the log, in "
                                    "time order, to learn from (default 0.5)")
    _add_contextual(replay)
    _add_guardrails(replay)


def _add_guardrails(commands: Any) -> None:
    guardrails = commands.add_parser(
        "guardrails", help="the service's guardrails (constrained Thompson sampling and its "
                           "hard gate) against worlds with guardrail metrics",
        description="Arms move a primary metric and guardrail metrics together (correlated "
                    "within a decision). The service's guarded allocation (P(best feasible "
                    "arm), refreshed every --update-every decisions, with the hard gate) "
                    "against plain Thompson sampling that ignores the guardrails and plain "
                    "Thompson sampling on the truly feasible arms only (oracle-feasible); "
                    "writes summary.json, guardrails.csv, regret.png, infeasible.png and "
                    "allocation.png to --out.")
    guardrails.add_argument("--scenario", default="harmful-best",
                            help="a built-in scenario (see --list; default harmful-best)")
    guardrails.add_argument("--list", action="store_true",
                            help="list the built-in scenarios and exit")
    guardrails.add_argument("--policy", action="append", dest="policies", metavar="SPEC",
                            help="policy to run, repeatable: constrained, plain, "
                                 "oracle-feasible; settings after a colon: "
                                 "constrained:gate=none,epsilon=0.05 (default: the three)")
    guardrails.add_argument("--min-share", type=float, default=0.05,
                            help="every policy's floor share unless its SPEC sets min_share "
                                 "(default 0.05)")
    guardrails.add_argument("--control-share", type=float, default=0.0,
                            help="every policy's control share unless its SPEC sets "
                                 "control_share (default 0)")
    guardrails.add_argument("--gate-min-samples", default="200", metavar="N",
                            help="the hard gate's minimum sample for constrained unless its "
                                 "SPEC sets gate; none: no gate (default 200)")
    guardrails.add_argument("--horizon", type=int,
                            help="decisions per replication (default: the scenario's)")
    guardrails.add_argument("--reps", type=int, default=50, help="replications (default 50)")
    guardrails.add_argument("--update-every", type=int, default=100,
                            help="decisions between refreshes of the allocation (default 100)")
    guardrails.add_argument("--seed", type=int, default=1)
    guardrails.add_argument("--threads", type=int, help="worker threads (default: all cores)")
    guardrails.add_argument("--out", type=Path, default=Path("simulation-results"),
                            help="output directory (default ./simulation-results)")
    guardrails.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_contextual(commands: Any) -> None:
    from simulations.contextual_worlds import WORLDS

    contextual = commands.add_parser(
        "contextual", help="contextual policies against contextual environments",
        description="The service's contextual Thompson sampling and baselines on simulated "
                    "contexts: mean cumulative regret per round over replications, with "
                    "delayed or batched feedback; writes summary.json, regret.csv and "
                    "regret.png to --out.")
    contextual.add_argument("--world", choices=WORLDS, default="obp-logistic",
                            help="obp-logistic (obp's synthetic logistic problem), linear, "
                                 "segments (the best arm differs by segment)")
    contextual.add_argument("--reward", choices=["bernoulli", "gaussian"], default="bernoulli",
                            help="gaussian: the linear world only")
    contextual.add_argument("--arms", type=int, default=10)
    contextual.add_argument("--dim", type=int, default=5,
                            help="context dimensions (obp-logistic, linear)")
    contextual.add_argument("--segments", type=int, default=4, help="segments (segments)")
    contextual.add_argument("--noise-sd", type=float, default=1.0,
                            help="reward noise of gaussian rewards (default 1)")
    contextual.add_argument("--policy", action="append", dest="policies", metavar="SPEC",
                            help="policy to run, repeatable: thompson, linucb, epsilon-greedy, "
                                 "context-free-thompson, segment-thompson, uniform; settings "
                                 "after a colon: linucb:alpha=0.5 (default: thompson, "
                                 "context-free-thompson, uniform)")
    contextual.add_argument("--horizon", type=int, default=10_000, help="rounds per replication")
    contextual.add_argument("--reps", type=int, default=20, help="replications (default 20)")
    contextual.add_argument("--seed", type=int, default=1)
    contextual.add_argument("--delay", type=int, default=0,
                            help="rewards arrive this many rounds later (default 0)")
    contextual.add_argument("--batch", type=int, default=1,
                            help="policies take in arrived rewards every B rounds (default 1)")
    contextual.add_argument("--out", type=Path, default=Path("simulation-results"),
                            help="output directory (default ./simulation-results)")
    contextual.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(arguments: argparse.Namespace) -> int:
    if arguments.simulate_command == "replay":
        return _replay(arguments)
    if arguments.simulate_command == "contextual":
        return _research("bandit simulate contextual", _contextual, arguments, [])
    if arguments.simulate_command == "guardrails":
        return _research("bandit simulate guardrails", _guardrails, arguments, [])
    from simulations import scenarios

    if arguments.list:
        for scenario in scenarios.SCENARIOS.values():
            print(f"{scenario.name:26} T={scenario.horizon:<9,} {scenario.description}")
            print(f"{'':26} {scenario.reference}")
        return 0
    return _research("bandit simulate", _simulate, arguments,
                     ["distributed"] if arguments.dask else [])


def _research(command: str, simulate: Callable[[argparse.Namespace], int],
              arguments: argparse.Namespace, extra: list[str]) -> int:
    """Run a simulation command that needs the research extra (matplotlib, tqdm and
    ``extra``): 2 with a message when a module is missing or a value is wrong."""
    if _refuse_missing(command, ["matplotlib", "tqdm", *extra]):
        return 2
    try:
        return simulate(arguments)
    except ValueError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 2


def _contextual(arguments: argparse.Namespace) -> int:
    from simulations import report
    from simulations.contextual import parse_contextual_policy, simulate_contextual
    from simulations.contextual_worlds import ContextualWorld

    if arguments.horizon < 1 or arguments.reps < 1 or arguments.batch < 1 \
            or arguments.delay < 0:
        raise ValueError("--horizon, --reps and --batch must be positive, --delay >= 0")
    world = ContextualWorld(arguments.world, arguments.reward, arguments.arms, arguments.dim,
                            arguments.segments, arguments.noise_sd)
    specs = [parse_contextual_policy(text) for text in
             arguments.policies or ["thompson", "context-free-thompson", "uniform"]]
    if len({spec.label for spec in specs}) < len(specs):
        raise ValueError("a --policy is given twice")
    for spec in specs:
        spec.build(world, world.model())  # refuse a policy the world cannot run, before any run
    with _progress_bar(arguments.reps * len(specs), disabled=arguments.no_progress) as bar:
        bar.set_description(f"{arguments.world}, {len(specs)} policies")
        results = simulate_contextual(specs, world, horizon=arguments.horizon,
                                      reps=arguments.reps, seed=arguments.seed,
                                      delay=arguments.delay, batch=arguments.batch,
                                      progress=bar.update)
    settings = {"world": world.kind, "reward": world.reward, "arms": world.n_arms,
                "dim": world.dim, "segments": world.segments, "horizon": arguments.horizon,
                "reps": arguments.reps, "seed": arguments.seed, "delay": arguments.delay,
                "batch": arguments.batch, "policies": [spec.label for spec in specs]}
    document = report.write_contextual(arguments.out, results, settings)
    uniform = document["policies"].get("uniform", {}).get("final_mean_regret")
    print(f"{'policy':32} {'regret':>10} {'stderr':>8} {'/ uniform':>10} {'seconds':>8}")
    for label, row in document["policies"].items():
        ratio = f"{row['final_mean_regret'] / uniform:10.3f}" if uniform else f"{'':10}"
        print(f"{label:32} {row['final_mean_regret']:10.2f} {row['final_regret_stderr']:8.2f} "
              f"{ratio} {row['seconds']:8.1f}")
    print(f"mean cumulative regret at round {arguments.horizon:,} over {arguments.reps} "
          f"replications; wrote {arguments.out}/summary.json, regret.csv, regret.png")
    return 0


def _guardrails(arguments: argparse.Namespace) -> int:
    from simulations.guardrails import (
        GUARDRAIL_SCENARIOS,
        parse_guardrail_policy,
        simulate_guardrails,
        write_guardrails,
    )

    if arguments.list:
        for scenario in GUARDRAIL_SCENARIOS.values():
            print(f"{scenario.name:24} T={scenario.horizon:<7,} {scenario.description}")
        return 0
    if arguments.scenario not in GUARDRAIL_SCENARIOS:
        raise ValueError(f"unknown scenario {arguments.scenario!r}; one of "
                         f"{', '.join(GUARDRAIL_SCENARIOS)}")
    scenario = GUARDRAIL_SCENARIOS[arguments.scenario]
    horizon = scenario.horizon if arguments.horizon is None else arguments.horizon
    if horizon < 1 or arguments.reps < 1 or arguments.update_every < 1:
        raise ValueError("--horizon, --reps and --update-every must be positive")
    gate = arguments.gate_min_samples.strip().lower()
    try:
        gate_value = float("nan") if gate in ("none", "off") else float(gate)
    except ValueError:
        raise ValueError(f"--gate-min-samples: {gate!r} is not a number or none") from None
    defaults = {"min_share": arguments.min_share, "control_share": arguments.control_share,
                "gate": gate_value}
    policies = [parse_guardrail_policy(text, defaults) for text in
                arguments.policies or ["constrained", "plain", "oracle-feasible"]]
    if len({policy.label for policy in policies}) < len(policies):
        raise ValueError("a --policy is given twice")
    with _progress_bar(arguments.reps * len(policies), disabled=arguments.no_progress) as bar:
        bar.set_description(f"{scenario.name}, {len(policies)} policies")
        results = simulate_guardrails(policies, scenario.world, horizon=horizon,
                                      reps=arguments.reps, seed=arguments.seed,
                                      update_every=arguments.update_every,
                                      threads=arguments.threads, progress=bar.update)
    settings = {"scenario": scenario.name, "horizon": horizon, "reps": arguments.reps,
                "seed": arguments.seed, "update_every": arguments.update_every,
                "policies": [policy.label for policy in policies],
                "policy_settings": {policy.label: dict(policy.settings) for policy in policies}}
    document = write_guardrails(arguments.out, results, scenario.world, settings)
    infeasible = [k for k, ok in enumerate(scenario.world.feasible) if not ok]
    print(f"{'policy':44} {'regret':>9} {'stderr':>7} {'infeasible':>10} {'stderr':>7} "
          f"{'held':>5}")
    for label, row in document["policies"].items():
        print(f"{label:44} {row['final_mean_regret']:9.2f} {row['final_regret_stderr']:7.2f} "
              f"{row['infeasible_decisions']:10.1f} {row['infeasible_decisions_stderr']:7.1f} "
              f"{row['replications_with_a_hold']:5d}")
    print(f"at decision {horizon:,} over {arguments.reps} replications: mean primary regret "
          f"against the best feasible arm ({scenario.world.best_feasible}), decisions on the "
          f"infeasible arms {infeasible}, replications in which the gate held an arm; wrote "
          f"{arguments.out}/summary.json, guardrails.csv, regret.png, infeasible.png, "
          "allocation.png")
    return 0


def _simulate(arguments: argparse.Namespace) -> int:
    from simulations import report, scenarios
    from simulations.engine import simulate
    from simulations.environments import Environment
    from simulations.policies import parse_policy

    if (arguments.means is None) == (arguments.scenario is None):
        raise ValueError("give exactly one of --means and --scenario")
    if arguments.scenario is not None:
        scenario = scenarios.get(arguments.scenario)
        environment = scenario.environment
        horizon, batch, delay = scenario.horizon, scenario.batch, scenario.delay
    else:
        try:
            means = np.array([float(m) for m in arguments.means.split(",")])
        except ValueError:
            raise ValueError(f"--means: {arguments.means!r} is not a list of numbers") from None
        environment = Environment(reward=arguments.reward, means=means,
                                  noise_sd=arguments.noise_sd, drift_sd=arguments.drift_sd,
                                  churn=arguments.churn)
        horizon, batch, delay = 10_000, 1, 0.0
    horizon = arguments.horizon or horizon
    batch = arguments.batch or batch
    delay = arguments.delay if arguments.delay is not None else delay
    if horizon < 1 or arguments.reps < 1 or batch < 1 or delay < 0:
        raise ValueError("--horizon, --reps and --batch must be positive, --delay >= 0")
    specs = arguments.policies or ["thompson"]
    grid: list[dict[str, Any]] = []
    names: list[str] = []
    if arguments.sweep:
        if len(specs) != 1:
            raise ValueError("--sweep varies the settings of one --policy")
        names, grid, specs = _sweep_grid(specs[0], arguments.sweep)
    policies = [parse_policy(spec) for spec in specs]
    with ExitStack() as stack:
        # The cluster first: a scheduler that cannot be reached is reported before any bar.
        client = None if arguments.dask is None else stack.enter_context(_dask(arguments))
        progress = stack.enter_context(
            _progress_bar(arguments.reps * len(policies), disabled=arguments.no_progress))
        if client is not None:
            from simulations.distributed import simulate_policies, worker_threads

            workers = worker_threads(client)
            progress.set_description(f"dask: {len(workers)} workers, "
                                     f"{sum(workers.values())} threads")
            results = simulate_policies(client, policies, environment, horizon=horizon,
                                        reps=arguments.reps, seed=arguments.seed, batch=batch,
                                        delay=delay, progress=progress.update)
        else:
            results = []
            for policy in policies:
                progress.set_description(policy.label)
                results.append(simulate(policy, environment, horizon=horizon,
                                        reps=arguments.reps, seed=arguments.seed, batch=batch,
                                        delay=delay, threads=arguments.threads,
                                        progress=progress.update))
    settings = {"horizon": horizon, "reps": arguments.reps, "seed": arguments.seed,
                "batch": batch, "delay": delay, "scenario": arguments.scenario,
                "reward": environment.reward, "means": [float(m) for m in environment.means],
                "policies": [p.label for p in policies]}
    document = report.write_outputs(arguments.out, results, environment, settings)
    print(f"{'policy':40} {'regret':>12} {'stderr':>10} {'best arm':>9} {'seconds':>8}")
    for label, row in document["policies"].items():
        print(f"{label:40} {row['final_mean_regret']:12.2f} {row['final_regret_stderr']:10.2f} "
              f"{row['final_best_arm_rate']:9.3f} {row['seconds']:8.1f}")
    if "lai_robbins" in document:
        print(_lai_robbins_lines(document["lai_robbins"], horizon))
    if grid:
        rows = report.sweep_table(results, grid)
        report.write_sweep(arguments.out, rows, names)
        print(f"sweep table: {arguments.out / 'sweep.csv'}, plot: {arguments.out / 'sweep.png'}")
    print(f"wrote {arguments.out}/summary.json, regret.csv, metrics.csv, regret.png, "
          "allocation.png")
    return 0


def _lai_robbins_lines(lai_robbins: dict[str, Any], horizon: int) -> str:
    """The Lai-Robbins constant as an asymptotic slope, against each policy's last decade."""
    constant, per_decade = lai_robbins["constant"], lai_robbins["per_decade"]
    lines = [f"Lai-Robbins asymptotic slope: regret grows at least like {constant:.4g}·log t "
             f"as t grows ({per_decade:.4g} per tenfold t); not a bound on regret at a "
             f"finite T. Regret added from T/10 to T={horizon:,}:"]
    lines += [f"  {policy:38} {added:10.2f}" for policy, added
              in lai_robbins["last_decade"].items() if added is not None]
    return "\n".join(lines)


@contextmanager
def _dask(arguments: argparse.Namespace) -> Iterator[Client]:
    from simulations import distributed

    try:
        with distributed.connect(arguments.dask, threads=arguments.threads) as client:
            yield client
    except distributed.ClusterError as error:
        raise ValueError(f"--dask: {error}") from error


def _sweep_grid(base: str, sweeps: list[str]) -> tuple[list[str], list[dict[str, Any]],
                                                         list[str]]:
    names, values = [], []
    for sweep in sweeps:
        name, _, raw = sweep.partition("=")
        if not name or not raw:
            raise ValueError(f"--sweep: {sweep!r} is not NAME=V1,V2,...")
        names.append(name)
        values.append([None if v == "none" else float(v) for v in raw.split(",")])
    grid = [dict(zip(names, point, strict=True)) for point in itertools.product(*values)]
    name, _, fixed = base.partition(":")
    specs = []
    for point in grid:
        settings = [s for s in fixed.split(",") if s]
        settings += [f"{k}={'none' if v is None else f'{v:g}'}" for k, v in point.items()]
        specs.append(f"{name}:{','.join(settings)}")
    return names, grid, specs


class _NoProgress:
    def update(self, count: int) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass


@contextmanager
def _progress_bar(total: int, *, disabled: bool) -> Iterator[Any]:
    if disabled:
        yield _NoProgress()
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="rep", file=sys.stderr, dynamic_ncols=True) as bar:
        yield bar


def _missing_research_modules(names: list[str]) -> list[str]:
    """Those of ``names`` that cannot be imported (they come with the research extra)."""
    import importlib.util

    return [name for name in names if importlib.util.find_spec(name) is None]


def _refuse_missing(command: str, modules: list[str]) -> bool:
    """Whether a module of the research extra that ``command`` needs is missing (then said
    on stderr, with how to install the extra)."""
    missing = _missing_research_modules(modules)
    if missing:
        print(f"{command}: {', '.join(missing)} not installed: this needs the research extra, "
              "pip install 'bandit-service[research]' (from a checkout: pip install "
              "'.[research]')", file=sys.stderr)
    return bool(missing)


def _print_estimates(estimates: Mapping[str, Any], width: int) -> None:
    """The OBD replays' table: one estimate per row, its method, value, interval and
    effective sample size."""
    print(f"{'estimate':{width}} {'method':16} {'value':>9} {'95% interval':>22} {'eff. n':>8}")
    for name, estimate in estimates.items():
        interval = f"[{estimate.ci_low:.5f}, {estimate.ci_high:.5f}]"
        print(f"{name:{width}} {estimate.method:16} {estimate.value:9.5f} {interval:>22} "
              f"{estimate.effective_n:8.0f}")


def _write_json(out: Path | None, name: str, text: str) -> None:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text + "\n")


def _replay(arguments: argparse.Namespace) -> int:
    from simulations.logs import LogError
    from simulations.obd import ESTIMATES, evaluate_obd

    if arguments.log is not None:
        return _replay_log(arguments)
    if arguments.position is None:
        arguments.position = 1
    elif arguments.position not in (1, 2, 3):
        print(f"bandit simulate replay: --position must be 1, 2 or 3 in the Open Bandit "
              f"Dataset, got {arguments.position}", file=sys.stderr)
        return 2
    data_dir: Path | None = arguments.data_dir
    if data_dir is not None and not data_dir.is_dir():
        print(f"bandit simulate replay: --data-dir {data_dir} is not a directory",
              file=sys.stderr)
        return 2
    if arguments.contextual:
        return _replay_contextual(arguments)
    try:
        result = evaluate_obd(data_dir, campaign=arguments.campaign,
                              position=arguments.position, seed=arguments.seed)
    except (FileNotFoundError, LogError) as e:
        print(f"bandit simulate replay: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, default=_plain)
    if arguments.json:
        print(text)
    else:
        print(f"{arguments.campaign}, position {arguments.position}")
        _print_estimates(result, 22)
        print("\nvalue: expected clicks per impression at the slot; eff. n: log rows that "
              "effectively carry the estimate (Kish's n for weighted ones)")
        for name in result:
            print(f"  {name:22} {ESTIMATES[name]}")
    _write_json(arguments.out, "replay.json", text)
    return 0


def _replay_contextual(arguments: argparse.Namespace) -> int:
    from simulations.logs import LogError
    from simulations.obd_contextual import CONTEXTUAL_ESTIMATES, evaluate_contextual_obd

    try:
        result = evaluate_contextual_obd(arguments.data_dir, campaign=arguments.campaign,
                                         position=arguments.position,
                                         train_share=arguments.train_share)
    except (FileNotFoundError, LogError, ValueError) as e:
        print(f"bandit simulate replay --contextual: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, default=_plain)
    if arguments.json:
        print(text)
    else:
        print(f"{arguments.campaign}: learnt on the first {result.train_rows:,} rows of the "
              f"random log ({result.train_clicks} clicks, every slot), d={result.dimension}; "
              f"evaluated at position {arguments.position} on the next {result.test_rows:,} "
              f"({result.test_clicks} clicks)")
        _print_estimates(result.estimates, 28)
        print("\nvalue: expected clicks per impression at the slot. So few clicks make every "
              "interval wide: compare intervals, not values.")
        for name in result.estimates:
            print(f"  {name:28} {CONTEXTUAL_ESTIMATES[name]}")
        if result.affinities_left_out:
            print(f"left out (dimension limit): {', '.join(result.affinities_left_out)}")
    _write_json(arguments.out, "replay-contextual.json", text)
    return 0


def _replay_log(arguments: argparse.Namespace) -> int:
    """``bandit simulate replay --log FILE``: targets evaluated on a decision log."""
    from simulations.decision_log import read_decision_log
    from simulations.evaluation import evaluate_log, write_evaluation
    from simulations.logs import LogError
    from simulations.ope import DEFAULT_LAMBDA, DEFAULT_TAU

    command = "bandit simulate replay --log"
    if _refuse_missing(command, (["pyarrow"] if arguments.log.suffix == ".parquet" else [])
                       + (["matplotlib"] if arguments.out is not None else [])):
        return 2
    if arguments.forecast_reps < 10:
        print(f"{command}: --forecast-reps must be >= 10", file=sys.stderr)
        return 2
    try:
        decisions = read_decision_log(arguments.log, reward=arguments.reward)
        evaluation = evaluate_log(
            decisions, arguments.targets, train_share=arguments.train_share,
            position=arguments.position, folds=arguments.folds, seed=arguments.seed,
            tau=DEFAULT_TAU if arguments.tau is None else arguments.tau,
            lambda_=DEFAULT_LAMBDA if arguments.lambda_ is None else arguments.lambda_,
            forecast_reps=arguments.forecast_reps)
    except (LogError, ValueError) as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 2
    text = json.dumps(evaluation.to_json(), indent=2)
    if arguments.json:
        print(text)
    else:
        print(_evaluation_table(evaluation))
    if arguments.out is not None:
        written = write_evaluation(arguments.out, evaluation, text)
        if not arguments.json:
            print(f"wrote {', '.join(str(path) for path in written)}")
    return 0


def _evaluation_table(evaluation: Any) -> str:
    """The table of ``bandit simulate replay --log``: target x estimator."""
    from datetime import UTC, datetime

    cut = datetime.fromtimestamp(evaluation.split_time, UTC).isoformat(timespec="seconds")
    width = max([34, *(len(label) + 1 for label in evaluation.targets)])
    lines = [
        f"{evaluation.source}: experiment {evaluation.experiment or '(unnamed)'}, "
        f"{len(evaluation.arms)} arms, {evaluation.reward} rewards ({evaluation.reward_source})",
        f"targets learnt on the {evaluation.train_rows:,} rows before {cut}; estimated on the "
        f"{evaluation.test_rows:,} rows from then on at position {evaluation.position} "
        f"(reward model: {evaluation.folds}-fold cross-fitted "
        f"{'logistic' if evaluation.reward == 'bernoulli' else 'ridge'} regression)",
        "",
        f"{'target':{width}} {'estimator':10} {'value':>10} {'95% interval':>24} "
        f"{'eff. n':>9}",
    ]

    def row(label: str, name: str, value: float, low: float, high: float, n: str) -> str:
        interval = f"[{low:.5f}, {high:.5f}]"
        return f"{label:{width}} {name:10} {value:10.5f} {interval:>24} {n:>9}"

    logged = evaluation.logged
    lines.append(row("logger (its own mean reward)", "on-policy", logged.value, logged.ci_low,
                     logged.ci_high, f"{logged.effective_n:,.0f}"))
    for label, result in evaluation.targets.items():
        for i, (name, estimate) in enumerate(result.estimates.items()):
            flag = "" if estimate.normal_ok else " !"
            lines.append(row(label if i == 0 else "", name, estimate.value, estimate.ci_low,
                             estimate.ci_high, f"{estimate.effective_n:,.0f}{flag}"))
        forecast = result.forecast
        if forecast is not None:
            low, high = forecast.range80
            lines.append(row("", "advisor", forecast.value, low, high,
                             f"{forecast.decisions:,}*"))
    lines += [
        "",
        "value: expected reward per decision had the target served the evaluation rows "
        "(frozen at the cut).",
        "eff. n: rows that effectively carry a weighted estimate (Kish); ! marks a normal "
        "interval not to be trusted.",
        "advisor: the tuning advisor's forecast of the same from the training posterior, the "
        "policy learning on; its interval is the 80% range over plausible worlds, * its "
        "decisions.",
    ]
    for label, result in evaluation.targets.items():
        lines.append(f"  {label}: {result.description}")
        if result.forecast is not None:
            lines += [f"    advisor: {note}" for note in result.forecast.notes]
    lines += [f"note: {note}" for note in evaluation.notes]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")
