"""What a user installs: the locks agree with pyproject.toml, and the wheel carries its data."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import zipfile
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


def _requirements(*extras: str, pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """A project's dependencies and those of ``extras``, its extras that name the project
    itself (``bandit-service[research]``) expanded."""
    project = tomllib.loads(pyproject.read_text())["project"]
    texts = list(project["dependencies"])
    wanted, seen = list(extras), set()
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                wanted += sorted(requirement.extras)
            else:
                texts.append(text)
    return [Requirement(text) for text in texts]


CLIENT = ROOT / "clients" / "python"


@pytest.mark.parametrize(("lock", "extras"), [("runtime.txt", ()), ("dev.txt", ("test",))])
def test_each_lock_pins_every_dependency_within_its_range(lock: str, extras: tuple[str]) -> None:
    """A dependency added to pyproject.toml without `sh requirements/lock.sh` fails here."""
    pins = _pins(LOCKS / lock)
    wanted = _requirements(*extras)
    if lock == "dev.txt":  # the tests run the client too
        wanted += _requirements(pyproject=CLIENT / "pyproject.toml")
    for requirement in wanted:
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


def test_research_dependencies_are_an_extra_not_the_service() -> None:
    """Plotting, progress bars, Dask and Parquet serve simulations and exports, not
    decisions."""
    names = {canonicalize_name(r.name) for r in _requirements()}
    assert not names & {"matplotlib", "tqdm", "distributed", "pyarrow", "urllib3"}, names
    research = {canonicalize_name(r.name) for r in _requirements("research")} - names
    assert research == {"matplotlib", "tqdm", "distributed", "pyarrow"}


@pytest.mark.timeout(300)
def test_the_client_installs_on_its_own_and_imports_nothing_of_the_service(
        tmp_path: Path) -> None:
    """A ranking service that wants only the client gets urllib3 and aiohttp, nothing else."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp_path / "wheel"),
                    str(CLIENT)], check=True, capture_output=True, timeout=240)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line.split(":", 1)[1].strip() for line in
                    archive.read(metadata).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
        assert all(not n.startswith("bandit/") for n in archive.namelist())
    assert {canonicalize_name(Requirement(r).name) for r in requires} == {"urllib3", "aiohttp"}
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(wheel)], check=True, capture_output=True,
                   timeout=240)
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import bandit_client;"
              "client = bandit_client.BanditClient('http://127.0.0.1:9'); client.close();"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "{'bandit', 'numba', 'numpy', 'scipy', 'redis', 'orjson'}))")
    result = subprocess.run([sys.executable, "-c", script, str(target)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_simulate_names_the_research_extra_when_it_is_missing() -> None:
    from simulations.cli import _missing_research_modules

    assert _missing_research_modules(["json", "no_such_research_module"]) == [
        "no_such_research_module"]
