"""The operator dashboard in a real browser against a real service process.

Debian's chromium (never a downloaded browser) is driven by Playwright's sync API; the service
is ``python -m bandit serve`` on the test Redis, sampling its history every 0.2 s. Plots are
checked on screenshots, decoded here with zlib: each arm's colour must be on the canvas.
"""

from __future__ import annotations

import json
import re
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright

from bandit.api.auth import key_line, new_key
from tests.conftest import ServiceProcess
from tests.test_guardrails_api import harmful_events

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
HISTORY_INTERVAL_S = "0.2"
# A small, seeded forecast: the advisor answers in about a second.
FORECAST_OPTIONS = {"decisions": "400", "reps": "20", "seed": "7"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the dashboard tests need Debian's chromium "
                    "(apt-get install chromium); they never download a browser")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Session:
    """A page on the dashboard of one service, recording every request the page makes."""

    def __init__(self, browser: Browser, service: ServiceProcess) -> None:
        self.service = service
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.page: Page = self.context.new_page()
        self.requests: list[Request] = []
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", self._record)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        # The dashboard is served with a Content-Security-Policy: a violation is an error.
        self.page.on("console", lambda message: self.errors.append(message.text)
                     if "Content Security Policy" in message.text else None)
        # Anything not addressed to the service is recorded and never leaves the machine.
        self.page.route("**/*", self._guard)

    def _record(self, request: Request) -> None:
        self.requests.append(request)

    def _guard(self, route: Route) -> None:
        if route.request.url.startswith(f"{self.service.url}/"):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def open(self, fragment: str = "") -> Page:
        self.page.goto(f"{self.service.url}/{fragment}")
        return self.page

    def api_calls(self, method: str, path_part: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and path_part in r.url]

    def close(self) -> None:
        self.context.close()
        assert not self.errors, f"JavaScript errors: {self.errors}"


@pytest.fixture
def dashboard(browser: Browser, service_process: Callable[..., ServiceProcess],
              ) -> Iterator[Session]:
    service = service_process(extra_env={"BANDIT_HISTORY_INTERVAL_S": HISTORY_INTERVAL_S})
    session = Session(browser, service)
    yield session
    session.close()


# -- helpers --------------------------------------------------------------------------------


def api(service: ServiceProcess, method: str, path: str,
        body: object = None, key: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(f"{service.url}{path}", data=data, method=method,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def create(service: ServiceProcess, experiment_id: str,
           rewards: dict[str, tuple[int, int]], key: str | None = None,
           **settings: Any) -> None:
    """An experiment whose arms got ``(successes, observations)``: no decision is served."""
    status, body = api(service, "POST", "/v1/experiments", {
        "id": experiment_id, "arms": list(rewards), "reward": "bernoulli", **settings}, key)
    assert status == 201, body
    events = [{"id": f"{arm}-{i}", "experiment": experiment_id, "arm": arm,
               "reward": int(i < successes)}
              for arm, (successes, observations) in rewards.items()
              for i in range(observations)]
    status, body = api(service, "POST", "/v1/events", {"events": events}, key)
    assert status == 200 and body["accepted"] == len(events), body


def wait_for_history(service: ServiceProcess, experiment_id: str, samples: int) -> None:
    """Serve decisions until the experiment's history holds ``samples`` samples (an idle
    experiment is not sampled again)."""
    deadline = time.monotonic() + 10
    while True:
        _, body = api(service, "GET", f"/v1/experiments/{experiment_id}/history")
        if len(body["samples"]) >= samples:
            return
        assert time.monotonic() < deadline, "no history samples"
        api(service, "POST", f"/v1/experiments/{experiment_id}/allocate", {"n": 5})
        time.sleep(0.1)


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, compressed = 8, b""
    width = height = channels = 0
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        chunk = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and colour_type in (2, 6) and interlace == 0, "unexpected PNG"
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            compressed += chunk
    raw = zlib.decompress(compressed)
    stride = width * channels
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                upper_left = previous[i - channels] if i >= channels else 0
                guess = left + up - upper_left
                distances = (abs(guess - left), abs(guess - up), abs(guess - upper_left))
                nearest = (left, up, upper_left)[distances.index(min(distances))]
                line[i] = (line[i] + nearest) & 255
        rgb = line if channels == 3 else bytearray(
            b for i, b in enumerate(line) if i % 4 != 3)
        rows.append(bytes(rgb))
        previous = line
    return width, height, rows


def pixels_of_colour(png: bytes, colour: str, tolerance: int = 16) -> int:
    """How many pixels of a screenshot are ``colour`` (#rrggbb), within ``tolerance``."""
    target = bytes.fromhex(colour.lstrip("#"))
    width, _, rows = decode_png(png)
    return sum(
        1 for row in rows for x in range(width)
        if abs(row[3 * x] - target[0]) <= tolerance and abs(row[3 * x + 1] - target[1])
        <= tolerance and abs(row[3 * x + 2] - target[2]) <= tolerance
    )


def arm_colours(page: Page) -> dict[str, str]:
    legend = page.locator("[data-testid=arm-legend] [data-arm]")
    return {item.get_attribute("data-arm") or "":
            item.locator(".swatch").get_attribute("data-colour") or ""
            for item in legend.all()}


def number_in(text: str) -> float:
    match = re.search(r"-?\d[\d,]*\.?\d*(e[-+]?\d+)?", text)
    assert match, f"no number in {text!r}"
    return float(match.group(0).replace(",", ""))


def shown_percent(text: str, value: float) -> bool:
    """Whether a cell shows ``value`` as the dashboard writes percentages."""
    if text == "<0.1%":
        return 0 < value < 0.0005
    if text == ">99.9%":
        return 0.9995 < value < 1
    return abs(number_in(text) - 100 * value) <= 0.05 + 1e-9


def shown_number(text: str, value: float) -> bool:
    """Whether a cell shows ``value`` to the dashboard's 4 significant digits."""
    return abs(number_in(text) - value) <= 5e-4 * abs(value) + 1e-12


def setting_text(value: Any) -> str:
    """A setting as the audit log writes it (numbers as JavaScript prints them)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ", ".join(
            (item["id"] if item["state"] == "active" else f"{item['id']} ({item['state']})")
            if isinstance(item, dict) else setting_text(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key}={setting_text(item)}" for key, item in value.items())
    return str(value)


def fill_forecast_options(page: Page, **extra: str) -> None:
    page.locator("[data-testid=forecast-options] summary").click()
    for name, value in {**FORECAST_OPTIONS, **extra}.items():
        page.fill(f"[data-testid=forecast-{name}]", value)


# -- tests ----------------------------------------------------------------------------------


def test_list_then_an_experiment_with_its_plots_drawn(dashboard: Session) -> None:
    service = dashboard.service
    rewards = {"control": (10, 100), "blue": (20, 100), "green": (14, 100)}
    create(service, "hero", rewards)
    create(service, "retired", {"a": (1, 2), "b": (0, 2)})
    assert api(service, "DELETE", "/v1/experiments/retired")[0] == 200
    wait_for_history(service, "hero", 3)

    page = dashboard.open()
    listing = page.locator("[data-testid=experiment-list]")
    expect(listing.locator("tr[data-id]")).to_have_count(2)
    for experiment in api(service, "GET", "/v1/experiments")[1]["experiments"]:
        row = listing.locator(f"tr[data-id='{experiment['id']}']")
        expect(row.locator("[data-col=status]")).to_have_text(experiment["status"])
        expect(row.locator("[data-col=reward]")).to_have_text(experiment["reward"])
        expect(row.locator("[data-col=arms]")).to_have_text(str(experiment["arms"]))
        expect(row.locator("[data-col=version]")).to_have_text(str(experiment["version"]))

    listing.get_by_role("link", name="hero").click()
    expect(page).to_have_url(f"{service.url}/#/exp/hero")
    expect(page.get_by_test_id("experiment-status")).to_have_text("active")
    expect(page.get_by_test_id("allocation-caption")).to_contain_text("samples")
    # Exact Beta posteriors: prior Beta(1, 1) plus each arm's successes and failures.
    caption = page.get_by_test_id("posterior-caption")
    expect(caption).to_contain_text("exact Beta posteriors")
    for arm, (successes, observations) in rewards.items():
        expect(caption).to_contain_text(
            f"{arm} Beta({1 + successes}, {1 + observations - successes})")
    assert page.get_by_test_id("posterior-plot").get_attribute("data-kinds") == "beta"

    colours = arm_colours(page)
    assert list(colours) == list(rewards)
    assert len(set(colours.values())) == 3
    unused = "#b07aa1"  # the fifth arm's colour: no arm here has it
    assert unused not in colours.values()
    for plot in ("allocation-plot", "posterior-plot"):
        png = page.get_by_test_id(plot).screenshot()
        for arm, colour in colours.items():
            assert pixels_of_colour(png, colour) >= 60, f"{arm}'s line is not on {plot}"
        # A drawn line gives hundreds of pixels; anti-aliased edges of other colours can land
        # within the tolerance of the unused one now and then, a few pixels at most.
        assert pixels_of_colour(png, unused) < 10
    assert not dashboard.outside


def test_stats_table_banners_and_audit_log_match_the_api(dashboard: Session) -> None:
    service = dashboard.service
    create(service, "shop", {"a": (20, 200), "b": (100, 200), "c": (30, 200)},
           exploration={"min_share": 0.05})
    status, changed = api(service, "PATCH", "/v1/experiments/shop", {
        "version": 1, "exploration": {"epsilon": 0.05},
        "arms": {"add": ["d"], "pause": ["c", "d"]}, "reason": "c is broken; d not ready"})
    assert status == 200, changed

    page = dashboard.open("#/exp/shop")
    rows = page.locator("[data-testid=stats-table] tbody tr")
    expect(rows).to_have_count(4)
    stats = api(service, "GET", "/v1/experiments/shop/stats")[1]
    for arm in stats["arms"]:
        row = page.locator(f"[data-testid=stats-table] tr[data-arm='{arm['arm']}']")
        cell = {name: row.locator(f"[data-col={name}]").inner_text().strip()
                for name in ("state", "n", "served", "mean", "ci95", "p_best",
                             "expected_loss", "share")}
        assert cell["state"] == arm["state"]
        assert cell["n"] == f"{arm['n']:,.0f}"
        assert cell["served"] == f"{arm['served']:,}"
        assert shown_number(cell["mean"], arm["mean"])
        low, high = cell["ci95"].strip("[]").split(", ")
        assert shown_number(low, arm["ci95"][0]) and shown_number(high, arm["ci95"][1])
        for name, shown in (("p_best", shown_percent), ("expected_loss", shown_number)):
            if arm[name] is None:  # paused arms are not in the race
                assert cell[name] == "—"
            else:
                assert shown(cell[name], arm[name]), (name, cell[name], arm[name])
        assert shown_percent(cell["share"], arm["share"])

    winner = stats["winner"]
    assert winner is not None and winner["arm"] == "b"
    expect(page.get_by_test_id("winner-banner")).to_contain_text("Winner: b")
    expect(page.locator("tr[data-arm=b]")).to_contain_text("winner")
    flags = page.get_by_test_id("health-flags")
    ratio = stats["health"]["sample_ratio"]
    expected_state = "unknown" if ratio is None else "ok" if ratio["ok"] else "bad"
    expect(flags.locator("[data-flag=sample-ratio]")).to_have_attribute(
        "data-state", expected_state)
    rewards = stats["health"]["rewards"]
    expected_state = "unknown" if rewards is None else "bad" if rewards["stalled"] else "ok"
    expect(flags.locator("[data-flag=rewards]")).to_have_attribute("data-state", expected_state)

    entries = api(service, "GET", "/v1/experiments/shop/audit")[1]["entries"]
    assert [entry["action"] for entry in entries] == ["create", "update"]
    audit_rows = page.locator("[data-testid=audit-table] tbody tr")
    expect(audit_rows).to_have_count(2)
    for entry in entries:
        row = page.locator(f"[data-testid=audit-table] tr[data-version='{entry['version']}']")
        assert row.locator("[data-col=actor]").inner_text() == entry["actor"]
        assert row.locator("[data-col=action]").inner_text() == entry["action"]
        assert row.locator("[data-col=reason]").inner_text() == (entry["reason"] or "")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["at"]))
        assert row.locator("[data-col=at]").inner_text() == when
        changes = row.locator("[data-col=changes] li")
        expect(changes).to_have_count(len(entry["changes"]))
        for key, change in entry["changes"].items():
            item = row.locator(f"[data-col=changes] li[data-key='{key}']")
            assert item.locator(".new").inner_text() == setting_text(change["new"])
            if entry["action"] != "create":
                old = "(new arm)" if change["old"] is None and key.startswith("arms.") \
                    else setting_text(change["old"])
                assert item.locator(".old").inner_text() == old
    # The newest entry comes first, with the values the PATCH changed.
    first = audit_rows.first
    expect(first).to_have_attribute("data-version", "2")
    expect(first.locator("li[data-key='exploration.epsilon']")).to_have_text(
        "exploration.epsilon 0 → 0.05")
    expect(first.locator("li[data-key='arms.c']")).to_have_text("arms.c active → paused")
    assert not dashboard.outside


def test_a_change_is_forecast_confirmed_and_applied(dashboard: Session) -> None:
    service = dashboard.service
    create(service, "tune", {"a": (10, 100), "b": (15, 100), "c": (12, 100)})
    page = dashboard.open("#/exp/tune")
    epsilon = page.get_by_test_id("setting-epsilon")
    expect(epsilon).to_have_value("0")
    epsilon.fill("0.1")
    expect(page.get_by_test_id("pending-changes")).to_contain_text(
        "exploration.epsilon 0 → 0.1")
    fill_forecast_options(page)

    # No decision was served, so there is no measured traffic: the advisor asks for a rate.
    page.get_by_test_id("forecast-button").click()
    server_error = page.get_by_test_id("settings-server-error")
    expect(server_error).to_contain_text("traffic_per_s")
    expect(page.get_by_test_id("error-forecast-traffic_per_s")).not_to_be_empty()
    expect(page.get_by_test_id("forecast")).to_be_hidden()
    page.get_by_test_id("forecast-traffic_per_s").fill("50")
    with page.expect_response(lambda r: r.url.endswith("/advise")) as answer:
        page.get_by_test_id("forecast-button").click()
    assert answer.value.status == 200
    forecast = answer.value.json()
    assert forecast["version"] == 1
    assert forecast["changes"] == {"exploration.epsilon": {"old": 0.0, "new": 0.1}}
    advise_body = dashboard.api_calls("POST", "/advise")[-1].post_data_json
    assert advise_body == {"exploration": {"epsilon": 0.1}, "decisions": 400, "reps": 20,
                           "seed": 7, "traffic_per_s": 50}
    panel = page.get_by_test_id("forecast")
    expect(panel).to_be_visible()
    expect(server_error).to_be_hidden()
    for scenario in ("current", "proposed"):
        cell = panel.locator(f"tr[data-row=regret] td[data-scenario={scenario}]")
        assert shown_number(cell.inner_text(), forecast[scenario]["regret"]["mean"])
    expect(page.get_by_test_id("forecast-verdict")).to_contain_text("P(proposed better)")
    assert shown_percent(
        page.get_by_test_id("forecast-verdict").locator("strong").first.inner_text()
        .removeprefix("P(proposed better) "), forecast["difference"]["p_proposed_better"])
    expect(page.get_by_test_id("forecast-assumptions")).to_contain_text("50 decisions/s, given")
    shares_png = page.get_by_test_id("forecast-shares-plot").screenshot()
    for arm, colour in arm_colours(page).items():
        assert pixels_of_colour(shares_png, colour) >= 30, f"{arm} missing on the forecast"

    page.get_by_test_id("apply-button").click()
    dialog = page.get_by_test_id("confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_test_id("confirm-changes")).to_have_text("exploration.epsilon 0 → 0.1")
    dialog.get_by_test_id("confirm-reason").fill("more exploration for the new season")
    with page.expect_response(lambda r: r.request.method == "PATCH") as patched:
        dialog.get_by_test_id("confirm-apply").click()
    assert patched.value.status == 200
    assert dashboard.api_calls("PATCH", "/v1/experiments/tune")[-1].post_data_json == {
        "version": 1, "exploration": {"epsilon": 0.1},
        "reason": "more exploration for the new season"}
    expect(dialog).to_be_hidden()
    expect(page.get_by_test_id("toast")).to_contain_text("version 2")

    config = api(service, "GET", "/v1/experiments/tune")[1]
    assert config["exploration"]["epsilon"] == 0.1
    assert config["version"] == 2
    newest = page.locator("[data-testid=audit-table] tbody tr").first
    expect(newest).to_have_attribute("data-version", "2")
    expect(newest.locator("[data-col=reason]")).to_have_text(
        "more exploration for the new season")
    expect(newest.locator("li[data-key='exploration.epsilon']")).to_have_text(
        "exploration.epsilon 0 → 0.1")
    expect(epsilon).to_have_value("0.1")
    expect(page.get_by_test_id("pending-changes")).to_contain_text("No changes")
    assert not dashboard.outside


def test_invalid_settings_are_explained_and_never_sent(dashboard: Session) -> None:
    service = dashboard.service
    create(service, "strict", {"a": (1, 10), "b": (2, 10), "c": (3, 10)})
    page = dashboard.open("#/exp/strict")
    expect(page.get_by_test_id("setting-min_share")).to_have_value("0")

    cases = [("min_share", "0.6"), ("max_share", "0.2")]
    for name, value in cases:
        field = page.get_by_test_id(f"setting-{name}")
        field.fill(value)
        # The same words as the service's refusal of this very change.
        status, refusal = api(service, "PATCH", "/v1/experiments/strict",
                              {"version": 1, "exploration": {name: float(value)}})
        assert status == 422
        expect(page.get_by_test_id(f"error-{name}")).to_have_text(refusal["error"]["message"])
        expect(page.get_by_test_id("settings-errors")).to_contain_text(
            refusal["error"]["message"])
        expect(page.get_by_test_id("forecast-button")).to_be_disabled()
        field.press("Enter")  # submitting the form must not send it either
        field.fill(str(api(service, "GET", "/v1/experiments/strict")[1]["exploration"][name]))
    page.get_by_test_id("setting-epsilon").fill("1.5")
    expect(page.get_by_test_id("error-epsilon")).to_have_text(
        "exploration.epsilon: must be <= 1.0, got 1.5")
    page.get_by_test_id("setting-epsilon").fill("0")
    page.get_by_test_id("arm-state-a").select_option("paused")
    page.get_by_test_id("arm-state-b").select_option("paused")
    page.get_by_test_id("arm-state-c").select_option("paused")
    expect(page.get_by_test_id("error-arms")).to_have_text(
        "arms: at least one arm must stay active")
    expect(page.get_by_test_id("forecast-button")).to_be_disabled()

    assert not dashboard.api_calls("PATCH", "/v1/")
    assert not dashboard.api_calls("POST", "/advise")
    config = api(service, "GET", "/v1/experiments/strict")[1]
    assert config["version"] == 1
    assert len(api(service, "GET", "/v1/experiments/strict/audit")[1]["entries"]) == 1
    assert not dashboard.outside


def test_a_concurrent_change_gets_a_conflict_and_a_reload(dashboard: Session) -> None:
    service = dashboard.service
    create(service, "busy", {"a": (3, 30), "b": (6, 30)})
    page = dashboard.open("#/exp/busy")
    page.get_by_test_id("auto-refresh").uncheck()  # the reload must come from the 409
    expect(page.get_by_test_id("setting-epsilon")).to_have_value("0")  # the form is loaded
    page.get_by_test_id("setting-epsilon").fill("0.2")
    fill_forecast_options(page, traffic_per_s="20")
    page.get_by_test_id("forecast-button").click()
    expect(page.get_by_test_id("forecast-table")).to_be_visible(timeout=30_000)
    status, _ = api(service, "PATCH", "/v1/experiments/busy",
                    {"version": 1, "exploration": {"min_share": 0.1}, "reason": "someone else"})
    assert status == 200

    page.get_by_test_id("apply-button").click()
    with page.expect_response(lambda r: r.request.method == "PATCH") as patched:
        page.get_by_test_id("confirm-apply").click()
    assert patched.value.status == 409
    expect(page.get_by_test_id("settings-server-error")).to_contain_text("Someone else changed")
    expect(page.get_by_test_id("experiment-meta")).to_contain_text("version 2")
    # The reload shows the other change and keeps the operator's own edit.
    expect(page.get_by_test_id("setting-min_share")).to_have_value("0.1")
    expect(page.get_by_test_id("setting-epsilon")).to_have_value("0.2")
    expect(page.get_by_test_id("forecast")).to_be_hidden()
    config = api(service, "GET", "/v1/experiments/busy")[1]
    assert config["exploration"]["epsilon"] == 0.0 and config["version"] == 2
    assert not dashboard.outside


def test_requests_stay_on_the_service_carry_the_key_and_keep_form_input(
    dashboard: Session,
) -> None:
    service = dashboard.service
    create(service, "local", {"a": (2, 20), "b": (4, 20)})
    page = dashboard.open()
    page.locator("[data-testid=experiment-list] a", has_text="local").click()
    expect(page.locator("[data-testid=stats-table] tbody tr")).to_have_count(2)

    page.get_by_test_id("api-key").fill("key-for-tests")
    page.get_by_test_id("api-key-save").click()
    epsilon = page.get_by_test_id("setting-epsilon")
    expect(epsilon).to_have_value("0")  # the form is loaded
    epsilon.fill("0.25")
    typed_at = len(dashboard.requests)
    # Auto refresh (every 5 s) fetches the stats again without touching the form.
    page.wait_for_event("request", lambda r: "/stats" in r.url, timeout=8_000)
    expect(epsilon).to_have_value("0.25")
    expect(page.get_by_test_id("pending-changes")).to_contain_text("exploration.epsilon")
    later = [r for r in dashboard.requests[typed_at:] if "/v1/" in r.url]
    assert later and all(r.headers.get("authorization") == "Bearer key-for-tests"
                         for r in later)
    # Kept for the tab's life only (sessionStorage), never on disk in localStorage.
    assert page.evaluate("sessionStorage.getItem('bandit.apiKey')") == "key-for-tests"
    assert page.evaluate("localStorage.getItem('bandit.apiKey')") is None

    origins = {f"{parts.scheme}://{parts.netloc}"
               for parts in (urllib.parse.urlsplit(r.url) for r in dashboard.requests)}
    assert origins == {service.url}
    assert not dashboard.outside
    paths = {r.url.removeprefix(service.url).split("?")[0] for r in dashboard.requests}
    assert {"/", "/dashboard/app.js", "/dashboard/style.css", "/v1/experiments",
            "/v1/experiments/local/stats"} <= paths


def test_api_keys_decide_what_the_page_may_do(
    browser: Browser, service_process: Callable[..., ServiceProcess],
) -> None:
    viewer, operator, loader = new_key(), new_key(), new_key()
    keys = ";".join([key_line("viewer", ["read"], viewer),
                     key_line("ops", ["read", "admin"], operator),
                     key_line("loader", ["decide", "admin"], loader)])
    service = service_process(extra_env={"BANDIT_API_KEYS": keys,
                                         "BANDIT_HISTORY_INTERVAL_S": HISTORY_INTERVAL_S})
    create(service, "guarded", {"a": (2, 20), "b": (4, 20)}, key=loader)
    session = Session(browser, service)
    try:
        page = session.open("#/exp/guarded")
        expect(page.get_by_test_id("auth-banner")).to_contain_text("401")

        page.get_by_test_id("api-key").fill(viewer)
        page.get_by_test_id("api-key-save").click()
        expect(page.get_by_test_id("identity")).to_have_text("key viewer: read")
        expect(page.get_by_test_id("mode")).to_have_text("read-only")
        expect(page.get_by_test_id("read-only-notice")).to_contain_text("needs the admin scope")
        expect(page.get_by_test_id("settings-form")).to_be_hidden()
        expect(page.get_by_test_id("stats-table").locator("tbody tr")).to_have_count(2)
        expect(page.get_by_test_id("auth-banner")).to_be_hidden()

        page.get_by_test_id("api-key").fill(operator)
        page.get_by_test_id("api-key-save").click()
        expect(page.get_by_test_id("identity")).to_have_text("key ops: admin, read")
        expect(page.get_by_test_id("mode")).to_be_hidden()
        warmup = page.get_by_test_id("setting-warmup")
        expect(warmup).to_be_visible()
        expect(warmup).to_have_value("0")
        warmup.fill("50")
        fill_forecast_options(page, traffic_per_s="20")
        page.get_by_test_id("forecast-button").click()
        expect(page.get_by_test_id("forecast-table")).to_be_visible(timeout=30_000)
        page.get_by_test_id("apply-button").click()
        with page.expect_response(lambda r: r.request.method == "PATCH") as patched:
            page.get_by_test_id("confirm-apply").click()
        assert patched.value.status == 200
        newest = page.locator("[data-testid=audit-table] tbody tr").first
        expect(newest).to_have_attribute("data-version", "2")
        expect(newest.locator("[data-col=actor]")).to_have_text("ops")
        assert api(service, "GET", "/v1/experiments/guarded", key=viewer)[1]["version"] == 2
        assert not session.outside
    finally:
        session.close()


def lift_text(value: float) -> str:
    """A relative lift as the dashboard writes it: +12.3%, \N{MINUS SIGN}4.0%, +250%."""
    percent = 100 * value
    sign = "+" if percent > 0 else "\N{MINUS SIGN}" if percent < 0 else ""
    return f"{sign}{abs(percent):.{0 if abs(percent) >= 100 else 1}f}%"


def serve_until_stalled(service: ServiceProcess, experiment_id: str) -> dict[str, Any]:
    """Serve decisions without rewards over several history intervals, until the stats call the
    reward flow stalled (at least 100 decisions and 5 intervals without a new observation)."""
    deadline = time.monotonic() + 20
    while True:
        api(service, "POST", f"/v1/experiments/{experiment_id}/allocate", {"n": 20})
        stats = api(service, "GET", f"/v1/experiments/{experiment_id}/stats")[1]
        rewards = stats["health"]["rewards"]
        if rewards is not None and rewards["stalled"]:
            return dict(stats)
        assert time.monotonic() < deadline, f"the reward flow never stalled: {rewards}"
        time.sleep(0.1)


def test_the_list_shows_each_experiment_at_a_glance_and_flags_problems(
    dashboard: Session,
) -> None:
    service = dashboard.service
    create(service, "quiet", {"control": (20, 200), "blue": (40, 200)})
    create(service, "steady", {"control": (20, 200), "green": (22, 200), "large": (18, 200)})
    wait_for_history(service, "steady", 3)
    stalled = serve_until_stalled(service, "quiet")

    page = dashboard.open()
    listing = page.locator("[data-testid=experiment-list]")
    quiet = listing.locator("tr[data-id=quiet]")
    expect(quiet).to_have_class(re.compile(r"\bproblem\b"))
    expect(quiet.locator("[data-flag=rewards]")).to_have_attribute("data-state", "bad")
    expect(quiet.locator("[data-flag=rewards]")).to_have_text("rewards stalled")
    attention = page.get_by_test_id("attention")
    expect(attention).to_contain_text("1 experiment needs attention")
    expect(attention.locator("a[data-id=quiet]")).to_have_text("quiet")
    steady = listing.locator("tr[data-id=steady]")
    expect(steady.locator("[data-flag=health]")).to_have_attribute("data-state", "ok")
    expect(steady).not_to_have_class(re.compile(r"\bproblem\b"))

    page.get_by_test_id("refresh-now").click()  # the stats above and the list, side by side
    summaries = {entry["id"]: entry["summary"] for entry in api(
        service, "GET", "/v1/experiments?summary=true")[1]["experiments"]}
    assert summaries["quiet"]["health"]["rewards_stalled"] is True
    assert summaries["quiet"]["leader"]["arm"] == "blue"
    assert summaries["quiet"]["lift"] == next(
        arm["lift"] for arm in stalled["arms"] if arm["arm"] == "blue")
    for experiment_id, summary in summaries.items():
        row = listing.locator(f"tr[data-id={experiment_id}]")
        leader = summary["leader"]
        expect(row.locator("[data-col=leader]")).to_contain_text(leader["arm"])
        lift = summary["lift"]
        expect(row.locator("[data-col=lift] strong")).to_have_text(lift_text(lift["mean"]))
        expect(row.locator("[data-col=lift]")).to_contain_text(
            f"[{lift_text(lift['ci95'][0])}, {lift_text(lift['ci95'][1])}] vs control")
        expect(row.locator("[data-col=winner]")).to_have_text(summary["winner"] or "none")
        assert number_in(row.locator("[data-col=traffic]").inner_text()) == pytest.approx(
            summary["traffic_last_hour"]["decisions"], abs=100)  # still being served
    assert summaries["quiet"]["traffic_last_hour"]["decisions"] >= 100
    assert dashboard.api_calls("GET", "/v1/experiments?limit=1000&summary=true")
    assert not dashboard.outside


def test_lifts_colour_named_arms_and_setting_changes_on_the_experiment_view(
    dashboard: Session,
) -> None:
    service = dashboard.service
    # Shares apart (blue and green lead; red and the control on the floor, red drawn last),
    # so that no arm's line hides another's.
    rewards = {"control": (10, 200), "blue": (40, 200), "green": (36, 200), "red": (20, 200)}
    create(service, "palette", rewards, exploration={"min_share": 0.1})
    wait_for_history(service, "palette", 3)
    status, _ = api(service, "PATCH", "/v1/experiments/palette", {
        "version": 1, "exploration": {"epsilon": 0.1}, "reason": "wider net"})
    assert status == 200
    wait_for_history(service, "palette", 8)

    page = dashboard.open("#/exp/palette")
    expect(page.get_by_test_id("reward-caption")).to_contain_text("samples")
    colours = arm_colours(page)
    # Named after a colour, drawn in it; the control takes a palette colour of another hue.
    assert {arm: colours[arm] for arm in ("blue", "green", "red")} == {
        "blue": "#2563eb", "green": "#16a34a", "red": "#dc2626"}
    assert colours["control"] == "#f28e2b"

    stats = api(service, "GET", "/v1/experiments/palette/stats")[1]
    assert stats["control"] == {"arm": "control", "chosen_by": "name"}
    lift_plot = page.get_by_test_id("lift-plot")
    expect(lift_plot).to_have_attribute("data-control", "control")
    for arm in stats["arms"]:
        cell = page.locator(f"[data-testid=stats-table] tr[data-arm='{arm['arm']}'] "
                            "[data-col=lift]")
        if arm["lift"] is None:
            expect(cell).to_have_text("control")
            continue
        lift = arm["lift"]
        expect(cell.locator("strong")).to_have_text(lift_text(lift["mean"]))
        expect(cell).to_contain_text(f"[{lift_text(lift['ci95'][0])}, "
                                     f"{lift_text(lift['ci95'][1])}]")
    png = lift_plot.screenshot()
    for arm in ("blue", "green", "red"):  # each interval drawn as a bar in its arm's colour
        assert pixels_of_colour(png, colours[arm]) >= 60, f"{arm}'s interval is not drawn"

    for plot in ("allocation-plot", "reward-plot"):
        canvas = page.get_by_test_id(plot)
        png = canvas.screenshot()
        for arm in ("blue", "green", "red"):
            assert pixels_of_colour(png, colours[arm]) >= 60, f"{arm}'s line is not on {plot}"
        # The setting change (version 2, from the audit log) is a dashed line at its time.
        markers = json.loads(canvas.get_attribute("data-markers") or "[]")
        assert [marker["version"] for marker in markers] == [2]
        _, height, rows = decode_png(png)
        column = markers[0]["x"]
        marker = bytes.fromhex("6b7280")
        dashes = sum(1 for row in rows[:height - 40] for x in (column - 1, column, column + 1)
                     if all(abs(row[3 * x + i] - marker[i]) <= 24 for i in range(3)))
        assert dashes >= 40, f"no change marker on {plot}"
    assert not dashboard.outside


def test_the_dashboard_fits_a_420_px_screen(dashboard: Session) -> None:
    service = dashboard.service
    create(service, "narrow-screen-with-a-long-experiment-id",
           {"control": (20, 200), "blue": (40, 200), "green-with-a-long-name": (30, 200)})
    # Unbroken words as long as the API allows, in the owner and the hypothesis: they wrap.
    status, _ = api(service, "PATCH", "/v1/experiments/narrow-screen-with-a-long-experiment-id",
                    {"version": 1, "owner": "O" * 200, "hypothesis": "H" * 2000,
                     "tags": ["t" * 64]})
    assert status == 200
    wait_for_history(service, "narrow-screen-with-a-long-experiment-id", 3)
    page = dashboard.page
    page.set_viewport_size({"width": 420, "height": 800})

    def fits() -> None:
        assert page.evaluate("document.documentElement.scrollWidth") <= 420

    dashboard.open()
    expect(page.locator("[data-testid=experiment-list] [data-col=leader]")).to_contain_text(
        "blue")
    fits()
    page.locator("[data-testid=experiment-list] a").first.click()
    expect(page.get_by_test_id("reward-caption")).to_contain_text("samples")
    expect(page.locator("[data-testid=stats-table] tbody tr")).to_have_count(3)
    fits()
    for plot in ("allocation-plot", "reward-plot", "lift-plot", "posterior-plot"):
        box = page.get_by_test_id(plot).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 420, plot
    # Wide tables scroll inside their box, not the page.
    table = page.get_by_test_id("stats-table")
    scroller = table.locator("xpath=..")
    assert scroller.evaluate("e => getComputedStyle(e).overflowX") == "auto"
    # Plots follow the window: back to a wide screen, the canvas is redrawn wider.
    narrow = page.get_by_test_id("allocation-plot").evaluate("c => c.width")
    page.set_viewport_size({"width": 1280, "height": 800})
    expect(page.get_by_test_id("allocation-plot")).not_to_have_js_property("width", narrow)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.go_back()
    expect(page.locator("[data-testid=experiment-list] [data-col=leader]")).to_contain_text(
        "blue")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert not dashboard.outside


def test_owner_tags_and_hypothesis_are_shown_when_the_service_has_them(
    dashboard: Session,
) -> None:
    """Metadata comes with another change: the answers are given it here, on their way."""
    service = dashboard.service
    create(service, "tagged", {"control": (5, 50), "b": (8, 50)})
    create(service, "plain", {"control": (5, 50), "b": (8, 50)})
    metadata = {"owner": "growth-team", "tags": ["checkout", "q4"],
                "hypothesis": "a bolder button lifts conversion"}

    def with_metadata(route: Route) -> None:
        answer = route.fetch()
        body = answer.json()
        for entry in body.get("experiments", [body]):
            if entry.get("id") == "tagged":
                entry.update(metadata)
        route.fulfill(response=answer, json=body)

    page = dashboard.page
    page.route(re.compile(r".*/v1/experiments(\?.*|/tagged)$"), with_metadata)
    dashboard.open()
    row = page.locator("[data-testid=experiment-list] tr[data-id=tagged]")
    expect(row.locator("[data-col=owner]")).to_have_text("growth-team")
    expect(row.locator("[data-tag]")).to_have_text(["checkout", "q4"])
    expect(page.locator("tr[data-id=plain] [data-col=owner]")).to_have_count(0)
    page.get_by_test_id("list-filter").fill("q4")  # the filter matches tags and owners
    expect(page.locator("[data-testid=experiment-list] tr[data-id]")).to_have_count(1)
    row.get_by_role("link", name="tagged").click()
    expect(page.get_by_test_id("experiment-owner")).to_have_text("growth-team")
    expect(page.get_by_test_id("experiment-hypothesis")).to_have_text(metadata["hypothesis"])
    assert not dashboard.outside


CONTEXTUAL_MODEL = {"type": "linear", "features": [
    {"name": "region", "type": "categorical", "values": ["eu", "us"]},
    {"name": "visits", "type": "numeric", "scale": [0, 10], "default": 0},
]}


def serve_contexts(service: ServiceProcess, experiment_id: str, rounds: int,
                   rates: dict[str, dict[str, float]], start: int = 0) -> None:
    """Decisions for each region's context and their rewards (deterministic: the arm's rate
    of the region, as a share of successes), a round every 0.15 s."""
    for round_number in range(start, start + rounds):
        events = []
        for region, arm_rates in rates.items():
            context = {"region": region, "visits": round_number % 10}
            status, body = api(service, "POST", f"/v1/experiments/{experiment_id}/allocate",
                               {"n": 10, "context": context})
            assert status == 200, body
            for j, decision in enumerate(body["decisions"]):
                events.append({"id": f"{round_number}-{region}-{j}", "experiment": experiment_id,
                               "arm": decision["arm"], "decision_id": decision["decision_id"],
                               "reward": int(j < 10 * arm_rates[decision["arm"]]),
                               "context": context})
        status, body = api(service, "POST", "/v1/events", {"events": events})
        assert status == 200 and body["accepted"] == len(events), body
        time.sleep(0.15)


def test_a_contextual_experiment_shows_its_coefficients_and_allocation_by_segment(
    dashboard: Session,
) -> None:
    service = dashboard.service
    rates = {"eu": {"a": 0.8, "b": 0.2, "c": 0.3}, "us": {"a": 0.2, "b": 0.8, "c": 0.3}}
    status, body = api(service, "POST", "/v1/experiments", {
        "id": "ctx", "arms": ["a", "b", "c"], "reward": "bernoulli",
        "model": CONTEXTUAL_MODEL})
    assert status == 201, body
    serve_contexts(service, "ctx", 8, rates)
    deadline = time.monotonic() + 10
    while True:  # every decision's counts flushed: the page and the test read the same
        _, stats = api(service, "GET", "/v1/experiments/ctx/stats")
        if sum(arm["served"] for arm in stats["arms"]) == 160:
            break
        assert time.monotonic() < deadline, "served counts not flushed"
        time.sleep(0.1)

    page = dashboard.open("#/exp/ctx")
    expect(page.get_by_test_id("experiment-model")).to_have_text("contextual")
    expect(page.get_by_test_id("experiment-meta")).to_contain_text("5 columns: region, visits")
    # One coefficient chart per arm, each naming its columns' means and intervals.
    plots = page.get_by_test_id("coefficient-plot")
    expect(plots).to_have_count(3)
    columns = stats["model"]["columns"]
    assert columns == ["intercept", "region=eu", "region=us", "region=other", "visits"]
    for arm in stats["model"]["arms"]:
        label = plots.and_(page.locator(f"[data-arm={arm['arm']}]")).get_attribute(
            "aria-label") or ""
        assert label.startswith(f"Coefficients of arm {arm['arm']}")
        for column in columns:
            assert f"{column} " in label
    colours = arm_colours(page)
    png = page.get_by_test_id("coefficient-grid").screenshot()
    for arm, colour in colours.items():
        assert pixels_of_colour(png, colour) >= 60, f"{arm}'s coefficients are not drawn"
    # Allocation by segment: a stacked chart per region that was served (not "other").
    expect(page.get_by_test_id("segment-caption")).to_contain_text("per history interval")
    segments = page.get_by_test_id("segment-plot")
    expect(segments).to_have_count(2)
    assert [segments.nth(i).get_attribute("data-segment") for i in range(2)] == [
        "region=eu", "region=us"]
    expect(page.get_by_test_id("segment-caption")).to_contain_text("No decisions yet: "
                                                                  "region = other")
    for i in range(2):
        assert int(segments.nth(i).get_attribute("data-decisions") or 0) > 0
        png = segments.nth(i).screenshot()
        drawn = [arm for arm, colour in colours.items() if pixels_of_colour(png, colour) >= 60]
        assert drawn, "no arm's share is drawn"
    # The share column is the average propensity served, as the stats say.
    expect(page.get_by_test_id("share-head")).to_have_text("Share (avg propensity)")
    for arm in stats["arms"]:
        cell = page.locator(f"[data-testid=stats-table] tr[data-arm={arm['arm']}] "
                            "[data-col=share]")
        expect(cell).not_to_have_text("—")
        assert abs(number_in(cell.inner_text()) - 100 * arm["share"]) < 1.0
    # The advisor cannot forecast it: a change is applied without a forecast.
    expect(page.get_by_test_id("no-forecast")).to_be_visible()
    expect(page.get_by_test_id("forecast-button")).to_be_hidden()
    page.fill("[data-testid=setting-epsilon]", "0.1")
    page.get_by_test_id("apply-without-forecast").click()
    page.get_by_test_id("confirm-apply").click()
    expect(page.get_by_test_id("experiment-meta")).to_contain_text("version 2")
    assert not [r for r in dashboard.requests if "/advise" in r.url]
    # A narrow screen: the small multiples stack, nothing is wider than the screen.
    first = page.get_by_test_id("coefficient-plot").first
    wide = first.evaluate("c => c.width")
    page.set_viewport_size({"width": 420, "height": 800})
    expect(first).not_to_have_js_property("width", wide)  # redrawn for the narrow screen
    boxes = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid=coefficient-plot], [data-testid=segment-plot]')]
        .map((e) => [e.dataset.arm || e.dataset.segment, e.getBoundingClientRect().left,
                     e.getBoundingClientRect().right])""")
    assert len(boxes) == 5
    for name, left, right in boxes:
        assert left >= 0 and right <= 420, name
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    assert not dashboard.outside


# -- layers and fixed experiments -----------------------------------------------------------


def test_the_layers_view_shows_each_layers_buckets_owners_and_audit(dashboard: Session) -> None:
    service = dashboard.service
    for name in ("headline", "ranking", "colour"):
        create(service, name, {"a": (1, 10), "b": (2, 10)})
    status, body = api(service, "POST", "/v1/layers", {
        "id": "homepage", "salt": "hp-1", "default": "old-page", "reason": "spring launch",
        "ranges": {"headline": [[0, 2000]], "ranking": [[5000, 6000], [9000, 9100]]}})
    assert status == 201, body
    status, body = api(service, "PATCH", "/v1/layers/homepage", {
        "version": 1, "add": {"headline": [[2000, 3000]]}, "reason": "more traffic"})
    assert status == 200, body
    status, body = api(service, "POST", "/v1/layers", {"id": "pricing",
                                                       "ranges": {"colour": [[0, 5000]]}})
    assert status == 201, body
    page = dashboard.open()
    page.get_by_test_id("layers-link").click()
    expect(page).to_have_url(f"{service.url}/#/layers")
    expect(page.get_by_test_id("layers-count")).to_have_text("2 layers")
    for layer in api(service, "GET", "/v1/layers")[1]["layers"]:
        card = page.locator(f"[data-layer='{layer['id']}']")
        expect(card.locator("[data-col=version]").first).to_have_text(str(layer["version"]))
        expect(card.locator("[data-col=salt]")).to_have_text(layer["salt"])
        expect(card.locator("[data-col=default]")).to_have_text(layer["default"] or "none")
        bar = card.get_by_test_id("layer-bar")
        bar_box = bar.bounding_box()
        assert bar_box is not None
        # One segment per range, each as wide as its buckets' part of the bar (to a pixel).
        segments = [(experiment, start, end) for experiment, spans in layer["ranges"].items()
                    for start, end in spans] + [(None, s, e) for s, e in layer["free"]]
        expect(bar.locator(".segment")).to_have_count(len(segments))
        for experiment, start, end in segments:
            selector = (f"[data-free][data-start='{start}']" if experiment is None else
                        f"[data-experiment='{experiment}'][data-start='{start}']")
            segment = bar.locator(selector)
            box = segment.bounding_box()
            assert box is not None
            assert abs(box["width"] - bar_box["width"] * (end - start) / 10000) <= 1.5
            assert abs(box["x"] - bar_box["x"] - bar_box["width"] * start / 10000) <= 1.5
            if experiment is not None and end - start >= 600:
                expect(segment).to_contain_text(experiment)
                expect(segment).to_contain_text(f"{layer['shares'][experiment] * 100:.1f}%")
        for experiment, share in layer["shares"].items():
            row = card.locator(f"[data-testid=layer-ranges] tr[data-experiment='{experiment}']")
            assert shown_percent(row.locator("[data-col=share]").inner_text(), share)
            expect(row.locator("[data-col=ranges]")).to_have_text(", ".join(
                f"[{s}, {e})" for s, e in layer["ranges"][experiment]))
        free = card.locator("[data-testid=layer-ranges] tr[data-free]")
        expect(free).to_contain_text(f"free → default {layer['default'] or 'none'}")
        expect(free.locator("[data-col=ranges]")).to_have_text(", ".join(
            f"[{s}, {e})" for s, e in layer["free"]))
        entries = api(service, "GET", f"/v1/layers/{layer['id']}/audit")[1]["entries"]
        rows = card.locator("[data-testid=layer-audit] tbody tr")
        expect(rows).to_have_count(len(entries))
        for entry in entries:
            row = card.locator(f"[data-testid=layer-audit] tr[data-version='{entry['version']}']")
            expect(row.locator("[data-col=action]")).to_have_text(entry["action"])
            expect(row.locator("[data-col=reason]")).to_have_text(entry["reason"] or "")
    homepage = page.locator("[data-layer=homepage]")
    change = homepage.locator("[data-testid=layer-audit] tr[data-version='2'] "
                              "li[data-key='ranges.headline']")
    expect(change).to_have_text("ranges.headline [0, 2000) → [0, 3000)")
    # The default's segments are the free buckets, labelled with the default.
    expect(homepage.locator(".segment[data-free][data-start='3000']")).to_have_text("old-page")
    # Each experiment's segments have its colour, the one of its row's swatch.
    headline = homepage.locator(".segment[data-experiment=headline]")
    swatch = homepage.locator("tr[data-experiment=headline] .swatch")
    assert headline.evaluate("e => getComputedStyle(e).backgroundColor") == \
        swatch.evaluate("e => getComputedStyle(e).backgroundColor")
    # A segment links to its experiment's page.
    homepage.locator(".segment[data-experiment=ranking]").first.click()
    expect(page).to_have_url(f"{service.url}/#/exp/ranking")
    expect(page.get_by_test_id("experiment-title")).to_have_text("ranking")
    page.go_back()
    expect(page.get_by_test_id("layers-count")).to_have_text("2 layers")
    assert not dashboard.outside


def test_a_fixed_experiment_shows_its_weights_and_targeting_and_no_settings_form(
    dashboard: Session,
) -> None:
    service = dashboard.service
    rule = {"any": [{"all": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]},
                             {"attribute": "app_version", "op": "semver_gte",
                              "value": "2.3.0"}]},
                    {"all": [{"attribute": "beta", "op": "eq", "value": True}]}]}
    create(service, "ab", {"red": (3, 30), "green": (5, 30), "blue": (1, 30)},
           policy="fixed", weights={"red": 2, "green": 1, "blue": 1}, targeting=rule)
    status, body = api(service, "PATCH", "/v1/experiments/ab",
                       {"version": 1, "arms": {"pause": ["blue"]}})
    assert status == 200, body
    create(service, "bandit", {"a": (1, 10), "b": (2, 10)})
    page = dashboard.open("#/exp/ab")
    expect(page.get_by_test_id("policy-badge")).to_have_text("fixed A/B test")
    expect(page.get_by_test_id("experiment-policy")).to_have_text("fixed")
    weights = page.get_by_test_id("weights-table")
    for arm, weight, share in (("red", "2", "66.7%"), ("green", "1", "33.3%"),
                               ("blue", "1", "—")):
        row = weights.locator(f"tr[data-arm={arm}]")
        expect(row.locator("[data-col=weight]")).to_have_text(weight)
        expect(row.locator("[data-col=share]")).to_have_text(share)
    # The shares are what the service serves (its stats' allocation).
    served = {arm["arm"]: arm["share"] for arm in api(service, "GET",
                                                      "/v1/experiments/ab/stats")[1]["arms"]}
    assert served["red"] == pytest.approx(2 / 3) and served["blue"] == 0
    expect(page.get_by_test_id("experiment-targeting")).to_have_text(
        '(country in ["DE", "FR"] and app_version semver_gte "2.3.0") or beta eq true')
    # No exploration settings for a fixed test: the service would refuse them (422).
    expect(page.get_by_test_id("settings")).to_be_hidden()
    assert api(service, "PATCH", "/v1/experiments/ab", {
        "version": 2, "exploration": {"epsilon": 0.1}})[0] == 422
    # A bandit keeps its form, and says it has no targeting rule.
    page.get_by_test_id("back-link").click()
    page.locator("[data-testid=experiment-list]").get_by_role("link", name="bandit").click()
    expect(page.get_by_test_id("experiment-policy")).to_have_text("thompson")
    expect(page.get_by_test_id("experiment-targeting")).to_contain_text("none")
    expect(page.get_by_test_id("settings")).to_be_visible()
    expect(page.get_by_test_id("weights-table")).to_have_count(0)
    assert not dashboard.api_calls("PATCH", "/v1/experiments")
    assert not dashboard.outside


# -- guardrails -----------------------------------------------------------------------------


def create_guarded(service: ServiceProcess, experiment_id: str) -> tuple[Any, Any]:
    """Arm b leads the primary by far and has revenue 10% below the control's (400
    observations each, sd 0.5): it breaks the revenue guardrail, and the gate holds it. The
    stats and the audit log once the gate has recorded that."""
    revenue = {"metric": "revenue", "kind": "gaussian", "direction": "higher",
               "threshold": {"relative": -0.02}}
    unsubscribe = {"metric": "unsubscribe", "kind": "bernoulli", "direction": "lower",
                   "threshold": {"absolute": 0.01}}
    status, body = api(service, "POST", "/v1/experiments", {
        "id": experiment_id, "arms": ["control", "b", "c"], "reward": "bernoulli",
        "guardrails": [revenue, unsubscribe], "control": "control",
        "exploration": {"min_share": 0.05, "gate_min_samples": 100}})
    assert status == 201, body
    events = harmful_events(experiment_id, c_revenue=1.2, unsubscribes=1000)
    status, body = api(service, "POST", "/v1/events", {"events": events})
    assert status == 200 and body["accepted"] == len(events), body
    deadline = time.monotonic() + 10
    while True:
        stats = api(service, "GET", f"/v1/experiments/{experiment_id}/stats")[1]
        audit = api(service, "GET", f"/v1/experiments/{experiment_id}/audit")[1]
        b = next(arm for arm in stats["arms"] if arm["arm"] == "b")
        if b["held"] and [e for e in audit["entries"] if e["action"] == "gate"]:
            return stats, audit
        assert time.monotonic() < deadline, "the gate never held b"
        time.sleep(0.1)


def test_guardrails_are_shown_beside_the_primary_with_the_gate_and_its_audit(
    dashboard: Session,
) -> None:
    """Arm b leads the primary by far and has revenue 10% below the control's (400
    observations each, sd 0.5): it breaks the revenue guardrail, and the gate holds it."""
    service = dashboard.service
    stats, audit = create_guarded(service, "guarded")

    page = dashboard.open("#/exp/guarded")
    panel = page.get_by_test_id("guardrails")
    expect(panel).to_be_visible()
    definitions = page.get_by_test_id("guardrail-list")
    expect(definitions.locator("li[data-metric=revenue]")).to_have_text(
        "revenue gaussian, higher is better: mean ≥ control's \u2212 2.0% of |control's|")
    expect(definitions.locator("li[data-metric=unsubscribe]")).to_have_text(
        "unsubscribe bernoulli, lower is better: mean ≤ 0.01")
    expect(page.get_by_test_id("guardrail-control")).to_contain_text("Control: control")
    expect(page.get_by_test_id("guardrail-gate")).to_contain_text("100 observations")
    table = page.get_by_test_id("guardrail-table")
    expect(table.locator("tbody tr")).to_have_count(3)
    for arm in stats["arms"]:
        row = table.locator(f"tr[data-arm='{arm['arm']}']")
        for metric in ("revenue", "unsubscribe"):
            value = arm["guardrails"][metric]
            text = row.locator(f"[data-col=mean-{metric}]").inner_text()
            mean, interval = text.split(" ", 1)
            assert shown_number(mean, value["mean"]), (arm["arm"], metric, text)
            low, high = interval.strip("[]").split(", ")
            assert shown_number(low, value["ci95"][0]) and shown_number(high, value["ci95"][1])
            cell = row.locator(f"[data-col=p-{metric}]")
            if value["p_violates"] is None:  # the control
                expect(cell).to_have_text("—")
            else:
                assert shown_percent(cell.inner_text(), value["p_violates"])
                expect(cell).to_have_attribute(
                    "data-warn", "true" if value["p_violates"] >= 0.8 else "false")
        assert shown_percent(row.locator("[data-col=p_best_feasible]").inner_text(),
                             arm["p_best_feasible"])
        expect(row.locator("[data-col=held]")).to_have_text("held at floor" if arm["held"]
                                                            else "—")
    held = table.locator("tr[data-arm=b]")
    expect(held).to_have_class(re.compile(r"\bheld\b"))
    expect(held.locator("[data-col=p_violates]")).to_have_class(re.compile(r"\bviolates\b"))
    expect(page.get_by_test_id("guardrail-caption")).to_contain_text("Held by the gate: b.")
    # The gate's flip in the audit log: its actor, its badge, the arms held before and after.
    gate = next(e for e in audit["entries"] if e["action"] == "gate")
    rows = page.locator("[data-testid=audit-table] tbody tr")
    row = rows.filter(has=page.locator("[data-col=actor]", has_text="guardrail-gate"))
    expect(row).to_have_count(1)
    expect(row.locator("[data-col=action] .badge.gate")).to_have_text("gate")
    expect(row.locator("li[data-key=held]")).to_have_text("held none → b")
    assert row.locator("[data-col=reason]").inner_text() == (gate["reason"] or "")
    # Without guardrails the panel stays hidden.
    create(service, "plain", {"a": (1, 10), "b": (2, 10)})
    page.goto(f"{service.url}/#/exp/plain")
    expect(page.get_by_test_id("experiment-title")).to_have_text("plain")
    expect(page.get_by_test_id("stats-table").locator("tbody tr")).to_have_count(2)
    expect(page.get_by_test_id("guardrails")).to_be_hidden()
    assert not dashboard.outside


def test_p_violates_over_time_is_plotted_with_the_gates_thresholds_and_held_stretches(
    dashboard: Session,
) -> None:
    """b breaks the revenue guardrail and is held (``create_guarded``): its line runs near
    100% over a thick band; c's stays near 0; the control has none. The gate's thresholds are
    dashed lines. Without guardrails the plot is not shown."""
    service = dashboard.service
    create_guarded(service, "watched")
    before = len(api(service, "GET", "/v1/experiments/watched/history")[1]["samples"])
    wait_for_history(service, "watched", before + 4)  # samples of b held
    samples = api(service, "GET", "/v1/experiments/watched/history")[1]["samples"]
    assert samples[-1]["held"] == [False, True, False]

    page = dashboard.open("#/exp/watched")
    card = page.get_by_test_id("violation-card")
    expect(card).to_be_visible()
    expect(card.locator("h2")).to_have_text("P(violates a guardrail) over time")
    caption = page.get_by_test_id("violation-caption")
    expect(caption).to_contain_text("samples")
    expect(caption).to_contain_text("from 95%")
    expect(caption).to_contain_text("below 80%")
    expect(caption).to_contain_text("none for the control, control")
    canvas = page.get_by_test_id("violation-plot")
    rules = json.loads(canvas.get_attribute("data-rules") or "[]")
    assert [(rule["y"], rule["label"]) for rule in rules] == [
        (0.95, "95%: the gate holds the arm"), (0.8, "80%: the gate releases it")]
    assert rules[0]["px"] < rules[1]["px"]  # 95% above 80%
    assert json.loads(canvas.get_attribute("data-arms") or "[]") == ["b", "c"]
    held = json.loads(canvas.get_attribute("data-held") or "[]")
    assert {stretch["arm"] for stretch in held} == {"b"}
    assert held[-1]["to"] == samples[-1]["t"]
    assert held[-1]["from"] < held[-1]["to"]

    colours = arm_colours(page)
    png = canvas.screenshot()
    width, _, rows = decode_png(png)
    for arm in ("b", "c"):
        assert pixels_of_colour(png, colours[arm]) >= 60, f"{arm}'s line is not drawn"
    # The held stretch: b's colour at 35% over white, under its line.
    b = bytes.fromhex(colours["b"].lstrip("#"))
    band = "#" + bytes(round(0.35 * c + 0.65 * 255) for c in b).hex()
    assert pixels_of_colour(png, band, tolerance=10) >= 30, "b's held stretch is not marked"
    # Each threshold a dashed grey line across the plot (dashes of 6 px, gaps of 4).
    marker = bytes.fromhex("6b7280")
    for rule in rules:
        dashes = sum(1 for row in rows[rule["px"] - 1:rule["px"] + 2] for x in range(width)
                     if all(abs(row[3 * x + i] - marker[i]) <= 24 for i in range(3)))
        assert dashes >= 0.3 * width, f"no dashed line at {rule['label']}"

    # Without guardrails there is no such plot.
    create(service, "unguarded", {"a": (1, 10), "b": (2, 10)})
    wait_for_history(service, "unguarded", 2)
    page.goto(f"{service.url}/#/exp/unguarded")
    expect(page.get_by_test_id("experiment-title")).to_have_text("unguarded")
    expect(page.get_by_test_id("allocation-caption")).to_contain_text("samples")
    expect(page.get_by_test_id("violation-card")).to_be_hidden()
    assert not dashboard.outside
