"""Screenshots of the operator dashboard for ``docs/dashboard.md``, made on a live service.

    .venv/bin/python -m tests.support.screenshots            # writes docs/images/dashboard-*.png

Starts its own ``redis-server`` and ``python -m bandit serve`` (history sampled every second),
runs simulated traffic for about a minute and a half (decisions, rewards with per-arm rates, a
setting change halfway, an experiment whose rewards stop coming, a contextual experiment whose
best arm differs by region), then saves the experiment list, one experiment and the contextual
one at 1366 and 420 px wide with Debian's chromium. Nothing leaves the
machine. The traffic is seeded, but the timing of a live service is not: each run's pictures
differ a little.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import FloatRect, Page, expect, sync_playwright

from tests.conftest import ServiceProcess
from tests.support.redis import RedisServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WIDTHS = (1366, 420)
#: The experiment shown on its own: several arms, a control, colour-named arms.
HERO = "checkout-button"
#: True reward rates (bernoulli) or means (gaussian) of the simulated users.
EXPERIMENTS: dict[str, dict[str, float]] = {
    HERO: {"control": 0.10, "blue": 0.13, "green": 0.11, "large-text": 0.085},
    "pricing-page": {"control": 0.05, "discount-10": 0.06, "discount-20": 0.095},
    "search-ranking": {"control": 2.0, "semantic": 2.3, "hybrid": 2.2},
}
GAUSSIAN = {"search-ranking"}
#: Who runs each experiment, why, and its tags (shown in the list and on its page).
METADATA: dict[str, dict[str, Any]] = {
    HERO: {"owner": "checkout team", "tags": ["checkout", "q4"],
           "hypothesis": "A blue button gets more purchases than the grey control."},
    "pricing-page": {"owner": "pricing@example.com", "tags": ["pricing"]},
    "search-ranking": {"owner": "search team", "tags": ["search", "ranking"]},
}
#: Rewards of this experiment stop arriving after a third of the run (stalled flag).
STALLS = "search-ranking"
#: Decisions per experiment per tick (four ticks a second).
TRAFFIC = {HERO: 30, "pricing-page": 18, "search-ranking": 11}
#: A contextual experiment: its reward rates by region (the best arm differs), the regions'
#: parts of the traffic, and the model it learns them with.
CONTEXTUAL = "homepage-feed"
CONTEXTUAL_RATES: dict[str, dict[str, float]] = {
    "eu": {"editorial": 0.12, "popular": 0.06, "personal": 0.08},
    "us": {"editorial": 0.05, "popular": 0.13, "personal": 0.08},
    "apac": {"editorial": 0.06, "popular": 0.07, "personal": 0.12},
}
CONTEXTUAL_REGIONS = {"eu": 0.45, "us": 0.35, "apac": 0.15, "latam": 0.05}
CONTEXTUAL_MODEL = {"type": "linear", "features": [
    {"name": "region", "type": "categorical", "values": ["eu", "us", "apac"]},
    {"name": "device", "type": "categorical", "values": ["mobile", "desktop"]},
    {"name": "visits", "type": "numeric", "scale": [0, 20], "default": 0},
]}
CONTEXTUAL_METADATA = {"owner": "feed team", "tags": ["home", "contextual"],
                       "hypothesis": "The best feed differs by region: a model learns which."}


def call(url: str, method: str, path: str, body: object = None) -> Any:
    request = urllib.request.Request(
        f"{url}{path}", method=method, headers={"Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def simulate(url: str, seconds: float, rng: random.Random) -> None:
    """Decisions and rewards for every experiment, a tick every 0.25 s; a change halfway."""
    for experiment_id, arms in EXPERIMENTS.items():
        call(url, "POST", "/v1/experiments", {
            "id": experiment_id, "arms": list(arms),
            "reward": "gaussian" if experiment_id in GAUSSIAN else "bernoulli",
            **METADATA[experiment_id]})
    call(url, "POST", "/v1/experiments", {
        "id": CONTEXTUAL, "arms": list(CONTEXTUAL_RATES["eu"]), "reward": "bernoulli",
        "model": CONTEXTUAL_MODEL, **CONTEXTUAL_METADATA})
    call(url, "POST", "/v1/experiments", {"id": "onboarding-email", "arms": ["short", "long"],
                                          "reward": "bernoulli"})
    call(url, "DELETE", "/v1/experiments/onboarding-email")
    started = time.monotonic()
    changed = False
    tick = 0
    while (elapsed := time.monotonic() - started) < seconds:
        events: list[dict[str, Any]] = []
        for experiment_id, arms in EXPERIMENTS.items():
            answer = call(url, "POST", f"/v1/experiments/{experiment_id}/allocate",
                          {"n": TRAFFIC[experiment_id]})
            if experiment_id == STALLS and elapsed > seconds / 3:
                continue
            for decision in answer["decisions"]:
                truth = arms[decision["arm"]]
                reward = (rng.gauss(truth, 1.0) if experiment_id in GAUSSIAN
                          else float(rng.random() < truth))
                events.append({"id": f"{experiment_id}-{tick}-{len(events)}",
                               "experiment": experiment_id, "arm": decision["arm"],
                               "reward": reward, "decision_id": decision["decision_id"]})
        events += contextual_traffic(url, tick, rng)
        call(url, "POST", "/v1/events", {"events": events})
        if not changed and elapsed > seconds / 2:
            version = call(url, "GET", f"/v1/experiments/{HERO}")["version"]
            call(url, "PATCH", f"/v1/experiments/{HERO}", {
                "version": version, "exploration": {"epsilon": 0.05, "min_share": 0.03},
                "reason": "keep some traffic on every arm while the lift settles"})
            changed = True
        tick += 1
        time.sleep(0.25)


def contextual_traffic(url: str, tick: int, rng: random.Random) -> list[dict[str, Any]]:
    """A tick of the contextual experiment: a few contexts, a handful of decisions each, and
    their rewards (an undeclared region, latam, is the model's "other")."""
    events: list[dict[str, Any]] = []
    regions, weights = list(CONTEXTUAL_REGIONS), list(CONTEXTUAL_REGIONS.values())
    for visitor in range(6):
        region = rng.choices(regions, weights)[0]
        visits = rng.randint(0, 25)
        context = {"region": region, "device": rng.choice(["mobile", "mobile", "desktop"]),
                   "visits": visits}
        answer = call(url, "POST", f"/v1/experiments/{CONTEXTUAL}/allocate",
                      {"n": 4, "context": context})
        rates = CONTEXTUAL_RATES.get(region, CONTEXTUAL_RATES["eu"])
        for decision in answer["decisions"]:
            # Returning visitors convert a little more on every arm.
            rate = rates[decision["arm"]] * (1 + visits / 40)
            events.append({"id": f"{CONTEXTUAL}-{tick}-{visitor}-{len(events)}",
                           "experiment": CONTEXTUAL, "arm": decision["arm"],
                           "reward": float(rng.random() < rate),
                           "decision_id": decision["decision_id"], "context": context})
    return events


def shoot(url: str, out: Path) -> list[Path]:
    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for width in WIDTHS:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.route("**/*", lambda route: route.continue_()
                       if route.request.url.startswith(url) else route.abort())
            page.goto(f"{url}/")
            expect(page.locator("[data-testid=experiment-list] [data-col=leader]").first
                   ).not_to_have_text("—")
            saved.append(_save(page, out / f"dashboard-list-{width}.png"))
            page.goto(f"{url}/#/exp/{HERO}")
            expect(page.get_by_test_id("allocation-caption")).to_contain_text("samples")
            expect(page.get_by_test_id("lift-plot")).to_have_attribute("data-control", "control")
            # Down to the arms table: the settings form and the audit log below it would make
            # the picture long and heavy.
            box = page.get_by_test_id("stats-table").locator("xpath=ancestor::section")
            saved.append(_save(page, out / f"dashboard-experiment-{width}.png",
                               bottom=box.bounding_box()))
            # The contextual experiment: its own cards, down to the allocation by segment.
            page.goto(f"{url}/#/exp/{CONTEXTUAL}")
            expect(page.get_by_test_id("coefficient-plot")).to_have_count(3)
            expect(page.get_by_test_id("segment-caption")).to_contain_text("per history")
            segments = page.get_by_test_id("segment-card")
            saved.append(_save(page, out / f"dashboard-contextual-{width}.png",
                               bottom=segments.bounding_box()))
            page.close()
        browser.close()
    return saved


def _save(page: Page, path: Path, bottom: FloatRect | None = None) -> Path:
    """The whole page, or down to the bottom of ``bottom``."""
    page.wait_for_timeout(500)  # the plots are drawn after the data arrives
    if bottom is None:
        page.screenshot(path=str(path), full_page=True)
    else:
        width = page.viewport_size["width"] if page.viewport_size else 1366
        page.screenshot(path=str(path), full_page=True, clip={
            "x": 0, "y": 0, "width": width, "height": bottom["y"] + bottom["height"] + 16})
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--seconds", type=float, default=90.0, help="simulated traffic")
    arguments = parser.parse_args()
    arguments.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bandit-screenshots-") as scratch:
        redis = RedisServer(Path(scratch))
        redis.start()
        try:
            service = ServiceProcess(redis.url, extra_env={"BANDIT_HISTORY_INTERVAL_S": "1"})
            try:
                service.wait_ready()
                simulate(service.url, arguments.seconds, random.Random(16))
                for path in shoot(service.url, arguments.out):
                    print(f"{path}  {path.stat().st_size / 1000:.0f} kB")
            finally:
                service.stop()
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
