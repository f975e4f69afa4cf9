"""The OpenAPI document is exact: schemathesis fuzzes every operation of a real service with it.

A real service (``create_app`` served on a loopback port, a real Redis) answers requests that
schemathesis generates from ``bandit.openapi.document()`` (which the service serves at
``/openapi.json``, checked below): valid ones and invalid ones, boundary values and random ones.
No request may get a 5xx; every response must have a documented status, a body that matches
the documented schema, the documented content type and headers; a request the document calls
invalid must be refused with a 4xx. Two runs: a service without API keys, and one with keys
where requests carry a key holding every scope (and schemathesis checks that leaving the key
out, or sending a wrong one, is refused).

Generation is derandomized with a fixed seed, so a run is the same every time (the requests
per operation and status, printed with ``-s``, too). ``BANDIT_FUZZ_EXAMPLES`` sets the
examples per operation and mode of the random phase (default 10, about 2,200 requests); the
big run is ``BANDIT_FUZZ_EXAMPLES=500 pytest tests/test_schemathesis.py -s``.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
import schemathesis
from aiohttp import web
from schemathesis.checks import not_a_server_error

from bandit.api import openapi
from bandit.api.app import create_app
from bandit.api.auth import SCOPES, hash_key
from bandit.api.handlers import DASHBOARD_DIR
from bandit.model import ID_PATTERN
from bandit.serving import advisor
from bandit.settings import Settings
from bandit.store.embedded import free_port
from tests.support.redis import RedisServer

SEED = 20_240_605
#: The key the keyed run sends: it holds every scope.
KEY = "bk_schemathesis-fuzz-key-0123456789abcdefghijklmnop"
#: Experiments created before the run, and the arms of each; generated requests are aimed at
#: them (see ``_aim``) so that they reach real data, not only 404s.
EXPERIMENTS = {"homepage": ("red", "green", "blue"), "pricing": ("low", "high")}
DASHBOARD_FILES = tuple(sorted(path.name for path in DASHBOARD_DIR.iterdir()))
#: Archiving is aimed here, so that the experiments above stay live for the later operations.
RETIRED = "retired"
#: The layer seeded (it holds `pricing`, which no fuzzed change touches): layer operations with a
#: valid id are aimed at it.
LAYER = "surface"
#: Changes are aimed at this one only: the other keeps the settings it was created with, for
#: which a forecast fits the small budget below.
CHANGED = "homepage"
#: The advisor's bound on a forecast's estimated run time, normally 10 s, lowered so that valid
#: advise requests stay quick: a forecast of the minimum 10 futures fits (about 0.1 s of
#: winner-call looks plus a short horizon), more futures or probability-path scenarios are
#: refused (422). The estimate ignores top-two's challenger resampling, which costs up to
#: 200 times more (reported), so the horizon is kept this short.
FORECAST_BUDGET_S = 0.11


def _examples() -> int:
    raw = os.environ.get("BANDIT_FUZZ_EXAMPLES", "10")
    if not raw.isdigit() or int(raw) < 1:
        raise pytest.UsageError(f"BANDIT_FUZZ_EXAMPLES: expected a whole number >= 1, got {raw!r}")
    return int(raw)


def _config(*, key: str | None) -> schemathesis.Config:
    """Deterministic generation, valid and invalid data, the checks that make a document exact."""
    checks: dict[str, Any] = {name: {"enabled": True} for name in (
        "not_a_server_error", "status_code_conformance", "content_type_conformance",
        "response_schema_conformance", "response_headers_conformance",
        "negative_data_rejection", "positive_data_acceptance", "unsupported_method",
        "allow_header_conformance")}
    # (413 is not among them: a list over its maxItems is a 422, as schemathesis expects.)
    checks["negative_data_rejection"]["expected-statuses"] = [
        400, 401, 403, 404, 405, 409, 422]
    # A valid request may still be refused: an unknown experiment (404), a stale version (409),
    # or values that are valid one by one but not together (422), which a JSON schema cannot
    # say (e.g. min_share times the active arms must not exceed 1). ``_single_field_refusal``
    # checks that a 422 to a valid request is of that kind.
    checks["positive_data_acceptance"]["expected-statuses"] = ["2xx", 404, 409, 422]
    if key is not None:
        checks["ignored_auth"] = {"enabled": True}
    config: dict[str, Any] = {
        "seed": SEED,
        "cache": {"enabled": False},
        "generation": {"mode": "all", "max-examples": _examples(), "deterministic": True,
                       "database": "none"},
        "checks": {"enabled": False, **checks},
    }
    if key is not None:
        config["auth"] = {"openapi": {"bearerAuth": {"bearer": key}}}
    return schemathesis.Config.from_dict(config)


class _ServiceThread:
    """The aiohttp app on a loopback port, run by its own event loop in a thread.

    Schemathesis drives a synchronous HTTP client, so the service cannot share the test's loop.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bandit-service")
        self.runner: web.AppRunner | None = None
        self.url = ""

    def __enter__(self) -> _ServiceThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=120)
        return self

    async def _start(self) -> None:
        self.runner = web.AppRunner(create_app(self.settings, seed=SEED), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def __exit__(self, *exc: object) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=60)
        self.loop.close()


class Service:
    """A running service under fuzz, and what was asked of it."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        #: Sent by the set-up requests only: the fuzz's requests carry what schemathesis puts.
        self.headers = headers
        self.session = requests.Session()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.created = 0
        self.turns: Counter[str] = Counter()

    def pick(self, purpose: str, choices: tuple[str, ...]) -> str | None:
        """The next of ``choices`` and None (keep what was generated), in turn for each
        purpose (one turn for all would tie the choices together): the cases come in the same
        order on every run, so this is deterministic too."""
        self.turns[purpose] += 1
        slot = self.turns[purpose] % (len(choices) + 1)
        return choices[slot] if slot < len(choices) else None

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, self.url + path, headers=self.headers,
                                        timeout=30, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    def seed_data(self) -> None:
        """Experiments with decisions, rewards and a configuration change behind them."""
        rewards = {"homepage": "bernoulli", "pricing": "gaussian"}
        for experiment, arms in {**EXPERIMENTS, RETIRED: ("a", "b")}.items():
            self.call("POST", "/v1/experiments", json={
                "id": experiment, "arms": list(arms), "reward": rewards.get(experiment,
                                                                            "bernoulli")})
        self.call("PATCH", "/v1/experiments/homepage",
                  json={"version": 1, "exploration": {"epsilon": 0.1}, "reason": "seed"})
        for experiment in EXPERIMENTS:
            decisions = self.call("POST", f"/v1/experiments/{experiment}/allocate",
                                  json={"n": 50})["decisions"]
            events = [{"id": f"seed-{experiment}-{i}", "experiment": experiment,
                       "arm": decision["arm"], "reward": i % 2,
                       "decision_id": decision["decision_id"]}
                      for i, decision in enumerate(decisions)]
            result = self.call("POST", "/v1/events", json={"events": events})
            assert result["accepted"] == len(events), result
        self.call("POST", "/v1/experiments/homepage/allocate",
                  json={"n": 5, "provisional": True})
        # An audit log with every action in it (the fuzz reads `pricing`'s and checks it
        # against the document, which once lacked `unarchive`).
        self.call("DELETE", "/v1/experiments/pricing")
        self.call("POST", "/v1/experiments/pricing/unarchive")
        self.call("POST", "/v1/layers", json={"id": LAYER, "default": "old",
                                              "ranges": {"pricing": [[0, 5000]]}})

    def version_of(self, experiment: str) -> int:
        return int(self.call("GET", f"/v1/experiments/{experiment}")["version"])

    def layer_version(self) -> int:
        return int(self.call("GET", f"/v1/layers/{LAYER}")["version"])

    def report(self, title: str) -> None:
        print(f"\n{title}: {sum(self.statuses.values())} requests")
        for (label, status), times in sorted(self.statuses.items()):
            print(f"{times:7d}  {status}  {label}")


def _valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


_REQUESTS = openapi.document()["components"]["schemas"]


def _valid_integer(value: object, component: str, field: str) -> bool:
    schema = _REQUESTS[component]["properties"][field]
    return type(value) is int and schema["minimum"] <= value <= schema["maximum"]


def _aim(case: Any, service: Service) -> None:
    """Point a generated request at real data, keeping what makes it valid or invalid.

    Only values that are already valid are replaced, and only by other valid values (a valid
    experiment id by a live experiment's id, a valid version by the current version, arm ids by
    the experiment's arms...), so a request schemathesis generated as invalid stays invalid and
    a valid one stays valid. Every other request is left as generated.
    """
    method, path = case.method.upper(), case.operation.path
    parameters = case.path_parameters or {}
    if "id" in parameters and _valid_id(parameters["id"]):
        targets = {"DELETE": (RETIRED,), "PATCH": (CHANGED,)}.get(method, tuple(EXPERIMENTS))
        if path.startswith("/v1/layers/"):
            targets = (LAYER,)
        if path.endswith("/advise"):
            # Only the unchanged experiment keeps settings whose forecast fits the budget,
            # whatever the changes aimed at the other one did before this case.
            targets = tuple(name for name in EXPERIMENTS if name != CHANGED)
        target = service.pick(f"{method} {path} id", targets)
        if target is not None:
            parameters["id"] = target
    if path == "/dashboard/{name}":
        parameters["name"] = service.pick("file", DASHBOARD_FILES) or parameters["name"]
    body = case.body if isinstance(case.body, dict) else None
    if body is None:
        return
    experiment = parameters.get("id")
    if path in ("/v1/experiments", "/v1/layers") and _valid_id(body.get("id")):
        # A new id each time: a reused one would be refused (409) whatever else the body says.
        service.created += 1
        body["id"] = f"new-{service.created}"
    if method == "PATCH" and experiment == LAYER and service.pick("layer version", (
            "current",)) and _valid_integer(body.get("version"), "LayerChange", "version"):
        body["version"] = service.layer_version()
    if method == "PATCH" and experiment in EXPERIMENTS and service.pick("version", ("current",)) \
            and _valid_integer(body.get("version"), "ExperimentChange", "version"):
        body["version"] = service.version_of(experiment)
    if path.endswith("/advise") and experiment in EXPERIMENTS \
            and service.pick("forecast", ("small",)):
        # A forecast that fits the fuzz's budget (FORECAST_BUDGET_S): fewest futures, short.
        if _valid_integer(body.get("reps"), "AdviseRequest", "reps"):
            body["reps"] = _REQUESTS["AdviseRequest"]["properties"]["reps"]["minimum"]
        if _valid_integer(body.get("decisions"), "AdviseRequest", "decisions"):
            body["decisions"] = min(body["decisions"], 1000)
    arms = EXPERIMENTS.get(experiment) if isinstance(experiment, str) else None
    if path == "/v1/experiments" and _valid_ids(body.get("arms")):
        arms = tuple(body["arms"])
    if arms and service.pick("arms", ("arms",)):
        _aim_at_arms(body, arms)
    if path == "/v1/events" and isinstance(body.get("events"), list):
        for event in body["events"]:
            if isinstance(event, dict) and _valid_id(event.get("experiment")):
                chosen = service.pick("event", tuple(EXPERIMENTS))
                if chosen is not None:
                    event["experiment"] = chosen
                    if _valid_id(event.get("arm")):
                        event["arm"] = service.pick("arm", EXPERIMENTS[chosen]) or event["arm"]


def _valid_ids(value: object) -> bool:
    """A list of distinct valid ids (what every arm list of the document is)."""
    return isinstance(value, list) and all(map(_valid_id, value)) and \
        len(set(value)) == len(value)


def _aim_at_arms(body: dict[str, Any], arms: tuple[str, ...]) -> None:
    """Name the experiment's arms where a body names arms (a control arm, arms to pause or
    resume), and lift floors and caps: random arm ids are refused as unknown, and random
    floors and caps rarely add up over the arms, before anything else is looked at."""
    exploration = body.get("exploration")
    if isinstance(exploration, dict):
        control = exploration.get("control")
        if isinstance(control, dict) and _valid_id(control.get("arm")):
            control["arm"] = arms[-1]
        for name, lifted in (("min_share", 0.0), ("max_share", 1.0)):
            schema = _REQUESTS["ExperimentChange"]["properties"]["exploration"]["properties"][name]
            value = exploration.get(name)
            if type(value) in (int, float) and value <= schema["maximum"] and (
                    value >= schema["minimum"] if "minimum" in schema
                    else value > schema["exclusiveMinimum"]):
                exploration[name] = lifted
    changes = body.get("arms")
    if isinstance(changes, dict):
        for action in ("pause", "resume"):
            if _valid_ids(changes.get(action)) and changes[action]:
                changes[action] = [arms[0]]


@pytest.fixture(scope="module")
def small_forecasts() -> Iterator[None]:
    """The advisor's run-time bound lowered to FORECAST_BUDGET_S while the fuzz runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(advisor, "MAX_SECONDS", FORECAST_BUDGET_S)
        yield


#: Keys of the keyed run: one with every scope (the fuzz's), one per scope.
KEYS = {"fuzz": (KEY, SCOPES), **{scope: (f"bk_schemathesis-{scope}-only", (scope,))
                                  for scope in SCOPES}}


def _serve(redis_server: RedisServer, *, keys: bool) -> Iterator[Service]:
    prefix = f"fuzz-{'keyed' if keys else 'open'}"
    client = redis.Redis(port=redis_server.port)
    stale = list(client.scan_iter(f"{prefix}:*"))
    if stale:
        client.delete(*stale)
    client.close()
    lines = "\n".join(f"{name} {','.join(scopes)} {hash_key(key)}"
                      for name, (key, scopes) in KEYS.items())
    settings = Settings(redis_url=redis_server.url, key_prefix=prefix, refresh_interval_s=0.05,
                        served_flush_interval_s=0.1, history_interval_s=0.5,
                        api_keys=lines if keys else None)
    with _ServiceThread(settings) as running:
        service = Service(running.url, {"Authorization": f"Bearer {KEY}"} if keys else {})
        service.seed_data()
        yield service
        service.report(f"service {'with' if keys else 'without'} keys")
    _check_exercised(service)


def _check_exercised(service: Service) -> None:
    """Every operation answered with success at least once: the run reached real data."""
    succeeded = {label for (label, status), _ in service.statuses.items() if status < 300}
    missing = sorted({label for label, _ in service.statuses} - succeeded)
    assert not missing, f"operations that never succeeded: {missing}"


@pytest.fixture(scope="module")
def open_service(redis_server: RedisServer, small_forecasts: None) -> Iterator[Service]:
    yield from _serve(redis_server, keys=False)


@pytest.fixture(scope="module")
def keyed_service(redis_server: RedisServer, small_forecasts: None) -> Iterator[Service]:
    yield from _serve(redis_server, keys=True)


#: How the service words a refusal of one value on its own (bandit.model's number, integer,
#: mapping and id checks, bandit.inputs): the document should have refused such a value first.
_SINGLE_FIELD = re.compile(r"expected |must be |unknown field|does not match the pattern|"
                           r"duplicate arm ids|: required|needs both|is not a number")


def _single_field_refusal(ctx: Any, response: Any, case: Any) -> None:
    """A valid request refused with 422 must break a rule that involves several values."""
    if response.status_code != 422 or case.meta is None or \
            not case.meta.generation.mode.is_positive:
        return
    message = response.json()["error"]["message"]
    assert not _SINGLE_FIELD.search(message), (
        f"a request valid by the document was refused for one value: {message!r}; the "
        "document should say so")


def _fuzz(case: Any, service: Service) -> None:
    _aim(case, service)
    sent = {"base_url": service.url, "session": service.session, "timeout": 30}
    response = case.call(**sent)
    service.statuses[case.operation.label, response.status_code] += 1
    case.validate_response(response, transport_kwargs=sent,
                           additional_checks=[_single_field_refusal])


open_api = schemathesis.openapi.from_dict(openapi.document(keys=False), config=_config(key=None))
keyed_api = schemathesis.openapi.from_dict(openapi.document(keys=True), config=_config(key=KEY))


@open_api.parametrize()
def test_service_without_keys_matches_its_document(case: Any, open_service: Service) -> None:
    _fuzz(case, open_service)


@keyed_api.parametrize()
def test_service_with_keys_matches_its_document(case: Any, keyed_service: Service) -> None:
    _fuzz(case, keyed_service)


@pytest.mark.parametrize("keys", [False, True], ids=["open", "keys"])
def test_the_service_serves_the_document_fuzzed(
    keys: bool, open_service: Service, keyed_service: Service
) -> None:
    service = keyed_service if keys else open_service
    served = requests.get(f"{service.url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == openapi.document(keys=keys)


def test_documented_scopes_are_the_enforced_ones(keyed_service: Service) -> None:
    """Each protected operation: refused (403) to keys without its scope, not to the others;
    refused (401, with a Bearer challenge) without a key; open operations need none."""
    document = openapi.document(keys=True)
    checked = 0
    for template, item in document["paths"].items():
        path = template.replace("{id}", "nobody").replace("{name}", "app.js")
        for method, operation in item.items():
            if method == "parameters":
                continue
            url = f"{keyed_service.url}{path}"
            anonymous = requests.request(method, url, json={}, timeout=10)
            if not operation["security"]:
                assert anonymous.status_code not in (401, 403), (method, template)
                continue
            assert anonymous.status_code == 401, (method, template)
            assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
            [requirement] = operation["security"]
            assert requirement == {"bearerAuth": operation["x-scopes"]}
            for scope in SCOPES:
                key = KEYS[scope][0]
                answer = requests.request(method, url, json={}, timeout=10,
                                          headers={"Authorization": f"Bearer {key}"})
                allowed = not operation["x-scopes"] or scope in operation["x-scopes"]
                assert (answer.status_code == 403) == (not allowed), (method, template, scope)
                if not allowed:
                    assert answer.json()["error"]["code"] == "forbidden"
                checked += 1
    assert checked == 3 * 21  # every /v1 operation, /v1/whoami and /metrics, with each key


#: A valid body for each operation that takes one (the outage test sends these).
_VALID_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/experiments"): {"id": "new", "arms": ["a", "b"], "reward": "bernoulli"},
    ("PATCH", "/v1/experiments/{id}"): {"version": 1, "exploration": {"epsilon": 0.1}},
    ("POST", "/v1/experiments/{id}/allocate"): {"n": 2},
    ("POST", "/v1/events"): {"events": [{"id": "e1", "experiment": "homepage", "arm": "red",
                                         "reward": 1}]},
    ("POST", "/v1/experiments/{id}/advise"): {"reps": 10, "traffic_per_s": 10},
    ("POST", "/v1/layers"): {"id": "new-layer"},
    ("PATCH", "/v1/layers/{id}"): {"version": 1},
    ("POST", "/v1/assign"): {"unit": "user-1"},
}


def test_answers_without_redis_are_the_documented_503s() -> None:
    """With Redis unreachable, exactly the operations documented with a 503 answer 503, with
    the documented body and Retry-After header; the others answer as usual."""
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_s=0.2,
                        refresh_interval_s=0.05)
    document = openapi.document(keys=False)
    seen = set()
    with _ServiceThread(settings) as running:
        for path, method in [(path, method.upper()) for path, item in document["paths"].items()
                             for method in item if method != "parameters"]:
            operation = open_api[path][method]
            body = ({"body": _VALID_BODIES[method, path], "media_type": "application/json"}
                    if (method, path) in _VALID_BODIES else {})
            case = operation.Case(
                path_parameters={"id": "homepage", "name": "app.js"} if "{" in path else None,
                **body)
            response = case.call(base_url=running.url, timeout=30)
            documented = document["paths"][path][method.lower()]["responses"]
            assert (response.status_code == 503) == ("503" in documented), (method, path)
            # Documented status, body, content type and headers (a 503 is expected here).
            case.validate_response(response, excluded_checks=[not_a_server_error])
            seen.add((method, path))
    assert len(seen) == 26  # every operation the service has


def _schema_at(document: dict[str, Any], component: str, field: str) -> dict[str, Any]:
    """The schema of ``field`` (dotted) in a request component, through nullable ``anyOf``s;
    ``prior.<name>`` is looked up in the reward type's branch (``prior@gaussian.alpha``)."""
    schema = document["components"]["schemas"][component]
    parts = field.split(".")
    if parts[0].startswith("prior@"):
        reward = parts[0].split("@")[1]
        [branch] = [rule["then"] for rule in schema["allOf"]
                    if rule["if"]["properties"].get("reward", {}).get("const") == reward]
        schema, parts = branch["properties"]["prior"], parts[1:]
        parts.insert(0, "")
    for part in parts:
        if part:
            schema = schema["properties"][part]
        schema = next((s for s in schema.get("anyOf", []) if s.get("type") != "null"), schema)
    return dict(schema)


def _limits(schema: dict[str, Any]) -> list[tuple[Any, bool]]:
    """Values at and just past each documented limit, and whether the document allows them."""
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    cases: list[tuple[Any, bool]] = []
    if "integer" in kinds:
        if "minimum" in schema:
            cases += [(schema["minimum"], True), (schema["minimum"] - 1, False)]
        if "maximum" in schema:
            cases += [(schema["maximum"], True), (schema["maximum"] + 1, False)]
    elif "number" in kinds:
        for key, toward, inside in (("minimum", -math.inf, True), ("maximum", math.inf, True),
                                    ("exclusiveMinimum", math.inf, False),
                                    ("exclusiveMaximum", -math.inf, False)):
            if key in schema:
                bound = float(schema[key])
                cases += [(bound, inside), (math.nextafter(bound, toward), not inside)]
    elif "string" in kinds:
        cases += [("x" * schema["maxLength"], True), ("x" * (schema["maxLength"] + 1), False)]
    elif "array" in kinds:
        ids = [f"n{i}" for i in range(schema["maxItems"] + 1)]
        cases += [(ids[:-1], True), (ids, False)]
        if schema.get("minItems", 0) > 0:
            cases += [(ids[:schema["minItems"]], True), (ids[:schema["minItems"] - 1], False)]
    assert cases, f"no limits in {schema}"
    return cases


#: (operation, request component, field as the document and the service's messages name it)
_BOUNDED: list[tuple[str, str, str]] = [
    *[("create", "NewExperiment", field) for field in (
        "arms", "attribution_window_s", "prior@bernoulli.alpha", "prior@bernoulli.beta",
        "prior@gaussian.mean", "prior@gaussian.kappa", "prior@gaussian.alpha",
        "prior@gaussian.beta", "exploration.epsilon", "exploration.min_share",
        "exploration.max_share", "exploration.temperature", "exploration.half_life_s",
        "exploration.warmup", "exploration.top_two", "exploration.control.share")],
    *[("patch", "ExperimentChange", field) for field in ("version", "reason", "arms.add")],
    *[("allocate", "AllocateRequest", field) for field in ("n", "k", "unit")],
    *[("advise", "AdviseRequest", field) for field in (
        "decisions", "traffic_per_s", "reward_delay_s", "reps", "seed", "threshold",
        "max_loss")],
    *[("event", "RewardEvent", field) for field in ("reward", "ts", "unit")],
]


def _nested(field: str, value: Any) -> dict[str, Any]:
    head, _, rest = field.partition(".")
    return {head.split("@")[0]: _nested(rest, value) if rest else value}


def test_documented_limits_are_the_services(open_service: Service) -> None:
    """Every documented limit of a request field, at and just past it: the service takes a
    value the document allows (it may still refuse it with others, as in ``min_share`` times
    the arms) and refuses, naming the field, a value the document does not."""
    document = openapi.document(keys=False)
    cases = 0
    for operation, component, field in _BOUNDED:
        for value, allowed in _limits(_schema_at(document, component, field)):
            name = field.replace("@bernoulli", "").replace("@gaussian", "")
            experiment = f"limits-{cases}"
            reward = "gaussian" if "gaussian" in field or operation == "event" else "bernoulli"
            body: dict[str, Any] = {"id": experiment, "arms": ["a", "b", "c"], "reward": reward}
            if operation != "create":
                open_service.call("POST", "/v1/experiments", json=body)
            path = f"/v1/experiments/{experiment}/{operation}"
            if operation == "create":
                path, body = "/v1/experiments", {**body, **_nested(field, value)}
                if field == "exploration.control.share":  # a control needs its arm too
                    body["exploration"]["control"]["arm"] = "c"
            elif operation == "patch":
                path, body = f"/v1/experiments/{experiment}", {"version": 1,
                                                              **_nested(field, value)}
            elif operation == "advise":
                body = {"reps": 10, "decisions": 10, "traffic_per_s": 10, **_nested(field, value)}
            elif operation == "allocate":
                body = _nested(field, value)
            else:
                path, body = "/v1/events", {"events": [{
                    "id": f"e{cases}", "experiment": experiment, "arm": "a", "reward": 1,
                    **_nested(field, value)}]}
            response = open_service.session.post(open_service.url + path, json=body, timeout=30) \
                if operation != "patch" else \
                open_service.session.patch(open_service.url + path, json=body, timeout=30)
            if operation == "event":
                assert response.status_code == 200, response.text
                refusals = [item["error"] for item in response.json()["rejected"]]
            else:
                refusals = [response.json()["error"]["message"]] \
                    if response.status_code == 422 else []
            own = [message for message in refusals if message.startswith(f"{name}:")]
            if allowed:
                assert not [message for message in own if _SINGLE_FIELD.search(message)], (
                    field, value, own)
            else:
                assert own, (field, value, response.status_code, response.text[:300])
            cases += 1
    assert cases == sum(len(_limits(_schema_at(document, c, f))) for _, c, f in _BOUNDED)
