"""What a user installs: the locks agree with pyproject.toml, and the wheel carries its data."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
# `name==version ; marker \` at the start of a line of a uv / pip-tools lock.
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def _pins(lock: Path) -> dict[str, Version]:
    """The versions a lock pins for this interpreter (markers evaluated here)."""
    pins: dict[str, Version] = {}
    for line in lock.read_text().splitlines():
        match = _PIN.match(line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker is None or Marker(marker).evaluate():
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


@pytest.mark.parametrize(("lock", "extras"), [("runtime.txt", ()), ("dev.txt", ("test",))])
def test_each_lock_pins_every_dependency_within_its_range(lock: str, extras: tuple[str]) -> None:
    """A dependency added to pyproject.toml without `sh requirements/lock.sh` fails here."""
    pins = _pins(LOCKS / lock)
    for requirement in _requirements(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock} does not pin {name}: run sh requirements/lock.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]}, outside {requirement}")


def test_the_dev_lock_pins_what_the_runtime_lock_pins() -> None:
    runtime, dev = _pins(LOCKS / "runtime.txt"), _pins(LOCKS / "dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_the_installed_environment_is_the_locked_one() -> None:
    """The tests run against exactly what the lock pins (the README installs from it)."""
    from importlib.metadata import distributions

    installed: dict[str, Version] = {canonicalize_name(d.metadata["Name"]): Version(d.version)
                                     for d in distributions()}
    pins = _pins(LOCKS / "dev.txt")
    differing = {name: (str(version), str(installed.get(name)))
                 for name, version in pins.items() if installed.get(name) != version}
    assert not differing, f"installed versions differ from requirements/dev.txt: {differing}"


def test_the_core_dependencies_stay_below_their_next_major_version() -> None:
    for requirement in _requirements():
        if requirement.name in {"numpy", "numba", "redis", "aiohttp"}:
            assert any(spec.operator == "<" for spec in requirement.specifier), requirement


@pytest.mark.timeout(300)
def test_the_wheel_carries_its_data(tmp_path: Path) -> None:
    """Installed anywhere (not from this checkout), the replay's sample loads from the package.

    (test_simulate_cli runs the whole `bandit simulate replay`; here, compiling its kernels
    afresh at the new location would add 20 s for no new check.)"""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp_path / "wheel"), str(ROOT)],
                   check=True, capture_output=True, timeout=240)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(wheel)], check=True, capture_output=True,
                   timeout=240)
    for shipped in ("simulations/data/obd/obd-sample.tar.gz", "simulations/data/obd/README.md",
                    "bandit/py.typed", "bandit/api/dashboard/index.html"):
        assert (target / shipped).is_file(), f"the wheel does not ship {shipped}"
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import simulations;"
        "assert simulations.__file__.startswith(sys.argv[1]), simulations.__file__;"
        "from simulations.obd import load_obd_log;"
        "print(json.dumps({n: load_obd_log(n).n for n in sys.argv[2:]}))"
    )
    logs = ["random_men", "bts_men", "random_women", "bts_women"]
    # Run from an empty directory, so nothing of the checkout is on the path.
    result = subprocess.run([sys.executable, "-c", script, str(target), *logs], cwd=tmp_path,
                            capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == dict.fromkeys(logs, 10_000)
