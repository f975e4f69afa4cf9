"""Issue 20's statistical bar for guardrails, on the service's own kernel
(``bandit.policy.guarded_allocation``, driven by :mod:`simulations.guardrails`).

The world is the ``harmful-best`` scenario: 4 Bernoulli arms, the control (arm 0) at 0.10, then
0.11, 0.12 and 0.13; one Gaussian guardrail (sd 1, higher is better, threshold -2% relative to
the control: level 0.98 c) with means 10, 10, 10 and 9.5. Arm 3, the best primary, is 5% worse
than the control on the guardrail: its true distance to the level is
DELTA = 9.8 - 9.5 = 0.3. The policy: min_share 0.05, no control share, the gate's minimum
sample 200, the allocation refreshed every 100 decisions. Every run is seeded, so each test
passes or fails the same way every time; the tolerances are derived below, not tuned.

Runtime: about 30 s on 2 cores (most of it the null case's 400 replications).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from bandit.ops.cli import main
from simulations.guardrails import (
    GUARDRAIL_SCENARIOS,
    GuardrailResult,
    parse_guardrail_policy,
    simulate_guardrails,
)

WORLD = GUARDRAIL_SCENARIOS["harmful-best"].world
NULL_WORLD = GUARDRAIL_SCENARIOS["null"].world
HARMFUL = 3
MIN_SHARE = 0.05
GATE = 200
UPDATE = 100
SIGMA = 1.0  # the guardrail's noise sd
CONTROL_MEAN = 10.0
DELTA = 0.98 * CONTROL_MEAN - 9.5  # 0.3: how far the harmful arm is below the level
NULL_MARGIN = CONTROL_MEAN - 0.98 * CONTROL_MEAN  # 0.2: how far an arm at c is above it
GATE_ON_Z = scipy.stats.norm.isf(0.05)  # P(violates) >= 0.95 <=> z >= 1.645
GATE_OFF_Z = scipy.stats.norm.isf(0.2)  # held until P(violates) < 0.8 <=> z < 0.842
K = WORLD.n_arms

#: Replications of the harmful-arm runs, and the failure budget of one: every replication must
#: pass, so P(any fails) <= R * budget = 20 * 2e-4 = 0.004 for a correct kernel.
R_HARMFUL = 20
COUNT_Z = 4.0  # each arm's count below its floor's mean by 4 sd: P <= 3.2e-5 (two arms)
EVIDENCE_Z = 3.72  # the evidence short of the gate: P = 1e-4; total 1.6e-4 <= 2e-4
VARIANCE_SLACK = 1.2  # the posterior's sample variance may exceed sigma^2 by 20% (3 sd at n 500)


def policy(text: str) -> str:
    return f"{text}{',' if ':' in text else ':'}min_share={MIN_SHARE}"


def floor_count(t: float) -> float:
    """A lower bound on an arm's observations after t decisions, from the floor alone: every
    arm (the control races with the others when there is no control share) is drawn with
    probability >= MIN_SHARE at each decision, so its count is at least Binomial(t, 0.05)
    (stochastically); COUNT_Z sd below that mean."""
    mean = MIN_SHARE * t
    return max(mean - COUNT_Z * math.sqrt(t * MIN_SHARE * (1.0 - MIN_SHARE)), 1.0)


def difference_sd(t: float) -> float:
    """The posterior sd of m_3 - 0.98 m_0 (what P(violates) is about) with both arms at the
    floor's lower bound: sigma sqrt(slack (1 / n_3 + 0.98^2 / n_0))."""
    n = floor_count(t)
    return SIGMA * math.sqrt(VARIANCE_SLACK * (1.0 + 0.98**2) / n)


def hold_bound() -> int:
    """The decisions by which the gate holds the harmful arm (a refresh, a multiple of UPDATE).

    At a refresh after t decisions P(violates) ~ Phi(-(mean_3 - 0.98 mean_0) / s) where s is
    the posterior sd of the difference (normal approximation of the posteriors, dof in the
    hundreds). The estimate of the difference is N(-DELTA, s), so the gate is on (P >= 0.95,
    z >= 1.645: whatever its memory) unless the estimate errs by more than
    DELTA - 1.645 s; that has probability <= 1e-4 once DELTA / s >= 1.645 + 3.72 = 5.37.
    With both arms at the floor only (the worst case) s^2 = 1.2 (1 + 0.96) / (0.05 t)
    ~ 47 / t, so t >= 47 * 5.37^2 / 0.09 ~ 15,000; with the counts' lower quantile
    (``floor_count``: 755 rather than 870 observations) 17,400. The gate's minimum sample
    (200 each) is reached long before (by t ~ 4,800 at the floor).
    """
    t = UPDATE
    while DELTA / difference_sd(t) < GATE_ON_Z + EVIDENCE_Z or floor_count(t) < GATE:
        t += UPDATE
    return t


N_HOLD = hold_bound()
#: Horizon of the harmful-arm runs: 20 refreshes past the bound, to see the arm stay held.
T_HARMFUL = N_HOLD + 20 * UPDATE


@pytest.fixture(scope="module")
def harmful() -> GuardrailResult:
    [result] = simulate_guardrails([parse_guardrail_policy(policy("constrained:gate=200"))],
                                   WORLD, horizon=T_HARMFUL, reps=R_HARMFUL, seed=20,
                                   update_every=UPDATE)
    return result


def test_the_harmful_best_arm_ends_at_the_floor(harmful: GuardrailResult) -> None:
    """In every one of the 20 replications the gate holds arm 3 by the refresh at
    ``N_HOLD`` (17,400 decisions: ``hold_bound``) and keeps it held to the end; while held its
    allocation is exactly the floor share, min_share = 0.05 (no control share).

    Staying held: after N_HOLD, s only shrinks, and the gate lets go only if z < 0.842, an
    error of DELTA - 0.842 s >= 4.53 s: P <= 2.9e-6 per refresh, 6e-5 over the 20 refreshes
    to the end (a union bound), 1.2e-3 over the 20 replications.
    """
    first = harmful.first_held(HARMFUL)
    assert np.all(first <= N_HOLD), (first.tolist(), N_HOLD)
    assert harmful.held_to_the_end(HARMFUL).all()
    after = harmful.starts >= first.max()
    shares = harmful.allocation[:, after, HARMFUL]
    np.testing.assert_allclose(shares, MIN_SHARE, rtol=1e-9)
    print(f"\nharmful arm first held at (decisions): median {np.median(first):.0f}, "
          f"max {first.max():.0f} (bound {N_HOLD}); floor share {shares.mean():.4f}")


def expected_share_bound(t: int) -> float:
    """An upper bound on arm 3's expected allocation in the interval refreshed after t
    decisions (before the gate holds it; after, it is exactly MIN_SHARE).

    Its allocation is at most max(min_share, P(best feasible)) (the floors' water-filling
    only scales free arms down), and P(best feasible) <= P(feasible) = Phi(D / s) with D the
    estimate of the difference, D ~ N(-DELTA, s): E[Phi(D / s)] = Phi(-DELTA / (sqrt 2 s)).
    With more observations than the floor's s is smaller and this smaller, so the floor's mean
    counts (no quantile, no slack: this is an expectation) give an upper bound. At t = 0
    nothing is known: the allocation is at most 1 - 3 floors."""
    if t == 0:
        return 1.0 - (K - 1) * MIN_SHARE
    s = SIGMA * math.sqrt((1.0 + 0.98**2) / (MIN_SHARE * t))
    return min(MIN_SHARE + float(scipy.stats.norm.cdf(-DELTA / (math.sqrt(2.0) * s))),
               1.0 - (K - 1) * MIN_SHARE)


def test_infeasible_traffic_is_bounded(harmful: GuardrailResult) -> None:
    """Decisions on the infeasible arm over the run (T_HARMFUL = 19,400 decisions).

    - Every replication: at most 0.85 of the decisions before N_HOLD (the others' floors
      leave it no more) and the floor, 0.05, after: a sum of Bernoulli draws with those
      probabilities, so at most its mean + 4.5 sd (sd <= sqrt(T / 4)), P ~ 3e-6 each.
    - The mean over replications: at most the sum of ``expected_share_bound`` over the
      refresh intervals (a normal approximation: an approximate bound), plus 3 standard errors
      of the mean over the 20 replications.
    """
    per_rep = harmful.infeasible[:, -1]
    worst = (1.0 - (K - 1) * MIN_SHARE) * N_HOLD + MIN_SHARE * (T_HARMFUL - N_HOLD)
    worst += 4.5 * math.sqrt(T_HARMFUL / 4.0)
    assert per_rep.max() <= worst
    expected = sum(UPDATE * expected_share_bound(t) for t in range(0, T_HARMFUL, UPDATE))
    stderr = per_rep.std(ddof=1) / math.sqrt(per_rep.shape[0])
    assert per_rep.mean() <= expected + 3.0 * stderr
    print(f"\ninfeasible decisions: mean {per_rep.mean():.0f} (se {stderr:.0f}), "
          f"max {per_rep.max():.0f}; bounds: mean {expected:.0f}, each {worst:.0f}")


R_PRICE = 200
T_PRICE = 5_000


def test_the_price_of_the_guardrail() -> None:
    """Mean primary regret of the constrained policy <= 1.2 x that of plain Thompson sampling
    on the truly feasible arms only (oracle-feasible), both with min_share 0.05, over 200
    replications of 5,000 decisions.

    Regret is sum (mu*_F - mu_a)^+ against the best feasible arm (arm 2, 0.12): a decision on
    the harmful arm (0.13) is charged 0, not credited -0.01; its cost is the infeasible
    traffic, bounded above. Both policies meet the same outcomes (common random numbers), so
    the comparison is paired: D_i = regret_constrained_i - 1.2 regret_oracle_i, and the test
    asks mean(D) + 3 se(D) <= 0. The standard error is stated to be small beside the margin:
    se(D) <= 1/3 of 0.2 x the oracle's mean regret (else 200 replications would be too few).
    """
    constrained, oracle = simulate_guardrails(
        [parse_guardrail_policy(policy("constrained:gate=200")),
         parse_guardrail_policy(policy("oracle-feasible"))],
        WORLD, horizon=T_PRICE, reps=R_PRICE, seed=21, update_every=UPDATE)
    c, o = constrained.regret[:, -1], oracle.regret[:, -1]
    d = c - 1.2 * o
    se = d.std(ddof=1) / math.sqrt(R_PRICE)
    margin = 0.2 * o.mean()
    print(f"\nregret: constrained {c.mean():.2f} (se {c.std(ddof=1) / math.sqrt(R_PRICE):.2f}), "
          f"oracle-feasible {o.mean():.2f} (se {o.std(ddof=1) / math.sqrt(R_PRICE):.2f}), "
          f"ratio {c.mean() / o.mean():.3f}; D {d.mean():.2f} (se {se:.2f}), margin {margin:.2f}")
    assert se <= margin / 3.0
    assert d.mean() + 3.0 * se <= 0.0


R_NULL = 400
T_NULL = 3_000
#: Pass: at most 3 of the 400 replications hold an arm (an observed rate under 1 in 100).
NULL_MAX_FLIPS = 3


def test_null_case_the_gate_rarely_flips() -> None:
    """No guardrail effect (every arm's guardrail mean is the control's, 2% above the level):
    the gate holds an arm, at any refresh, in at most 3 of 400 replications of 3,000 decisions.

    Binomial reasoning for the criterion X <= 3 out of 400: were the true rate 2.5% or more,
    P(X <= 3) <= binom.cdf(3, 400, 0.025) = 0.010, so passing rules that out; at the rate
    expected (below), P(pass) ~ 1. Expected: a false hold needs z <= -1.645 where z has mean
    NULL_MARGIN / s >= 0.2 / sqrt(1.96 / 200) = 2.0 at the gate's minimum sample (200 each),
    so P ~ Phi(-3.67) = 1.2e-4 per arm and refresh there, quickly smaller as counts grow:
    about 1e-3 per replication over 3 arms and the refreshes near the minimum sample.
    """
    assert scipy.stats.binom.cdf(NULL_MAX_FLIPS, R_NULL, 0.025) < 0.011
    [result] = simulate_guardrails([parse_guardrail_policy(policy("constrained:gate=200"))],
                                   NULL_WORLD, horizon=T_NULL, reps=R_NULL, seed=22,
                                   update_every=UPDATE)
    flipped = int(np.count_nonzero(result.flips() > 0))
    largest = float(np.nanmax(result.p_violates[:, :, 1:]))
    print(f"\nnull: {flipped} of {R_NULL} replications held an arm; largest P(violates) "
          f"{largest:.3f}")
    assert flipped <= NULL_MAX_FLIPS


# --- Mechanics -------------------------------------------------------------------------------


def test_worlds_feasibility_and_correlated_outcomes() -> None:
    """The true feasibility and regret gaps; the copula's correlation (latent -0.3 between a
    Bernoulli and a Gaussian: the point-biserial correlation is -0.3 phi(Phi^-1(p)) /
    sqrt(p (1 - p)), -0.175 at p = 0.12; 100,000 draws give it within 0.01 at 3 sd)."""
    assert WORLD.feasible.tolist() == [True, True, True, False]
    assert WORLD.best_feasible == 2
    np.testing.assert_allclose(WORLD.gaps, [0.02, 0.01, 0.0, 0.0])
    assert NULL_WORLD.feasible.all()
    primary, guards = WORLD.outcomes(np.random.default_rng(0), 100_000)
    p = 0.12
    expected = -0.3 * scipy.stats.norm.pdf(scipy.stats.norm.ppf(p)) / math.sqrt(p * (1 - p))
    observed = np.corrcoef(primary[:, 2], guards[0, :, 2])[0, 1]
    assert abs(observed - expected) < 0.01
    assert abs(primary[:, 2].mean() - p) < 0.005
    assert abs(guards[0, :, 3].mean() - 9.5) < 0.02


def test_the_same_seed_gives_the_same_numbers_whatever_the_threads() -> None:
    policies = [parse_guardrail_policy(policy(name))
                for name in ("constrained", "plain", "oracle-feasible")]
    runs = [simulate_guardrails(policies, WORLD, horizon=600, reps=3, seed=5, update_every=50,
                                threads=threads) for threads in (1, 2)]
    for one, two in zip(*runs, strict=True):
        np.testing.assert_array_equal(one.regret, two.regret)
        np.testing.assert_array_equal(one.allocation, two.allocation)
        np.testing.assert_array_equal(one.held, two.held)


def test_policy_specs() -> None:
    spec = parse_guardrail_policy("constrained:gate=none,epsilon=0.1", {"min_share": 0.05})
    assert spec.gate is None and spec.settings["min_share"] == 0.05
    assert parse_guardrail_policy("constrained").gate == 200
    assert "gate" not in parse_guardrail_policy("plain", {"gate": 100.0}).settings
    for bad in ("constrained:gate=-1", "plain:gate=10", "unknown", "plain:min_share=2",
                "plain:epsilon=none", "constrained:gate=0", "plain:control_share=1"):
        with pytest.raises(ValueError):
            parse_guardrail_policy(bad)
    for bad in ("plain:epsilon=0.1,epsilon=0.2", "plain:min_share=nan"):
        with pytest.raises(ValueError, match=r"twice|finite"):
            parse_guardrail_policy(bad)
    # Settings the service refuses for this world's experiment, refused with its message
    # (an attacker run simulated policies the service cannot run).
    for text, message in (("constrained:min_share=0.5", "min_share"),
                          ("constrained:top_two=1", "top_two: must be < 1.0"),
                          ("plain:max_share=0.1", "the caps cannot add up"),
                          ("constrained:gate=2000000000", "gate_min_samples")):
        with pytest.raises(ValueError, match="the service would refuse it: .*" + message):
            simulate_guardrails([parse_guardrail_policy(text)], WORLD, horizon=100, reps=1,
                                seed=0)


COMMAND = ["simulate", "guardrails", "--scenario", "harmful-best", "--horizon", "2000",
           "--reps", "4", "--no-progress"]


def test_the_documented_command_writes_the_plots(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The command of docs/guardrails-simulations.md, shortened (it is also run there)."""
    assert main([*COMMAND, "--out", str(tmp_path)]) == 0
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text  # JSON has none: a setting that is off is null
    summary = json.loads(text)
    assert set(summary["policies"]) == {"constrained", "plain", "oracle-feasible"}
    assert summary["world"]["feasible"] == [True, True, True, False]
    assert summary["policies"]["oracle-feasible"]["infeasible_decisions"] == 0
    for name in ("regret.png", "infeasible.png", "allocation.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (tmp_path / "guardrails.csv").read_text().startswith("policy,t,mean_regret")
    assert "infeasible" in capsys.readouterr().out
    assert main(["simulate", "guardrails", "--scenario", "nope", "--no-progress"]) == 2
    assert main(["simulate", "guardrails", "--list"]) == 0


def test_the_docs_name_the_command() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "guardrails-simulations.md")
    text = page.read_text()
    assert "bandit simulate guardrails --scenario harmful-best" in text
    assert "pytest -q tests/test_guardrails_sim.py" in text


def test_help_lists_the_subcommand() -> None:
    result = subprocess.run([sys.executable, "-c", "from bandit.ops.cli import main; "
                             "main(['simulate', '--help'])"], capture_output=True, text=True,
                            check=False)
    assert "guardrails" in result.stdout
