"""The import graph follows the layout: data flows one way, ops -> api -> serving -> store ->
forecast -> policy -> the foundations, and the product never imports the researchers' front end
(``simulations``) except where the command line hands ``bandit simulate`` over to it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Each package of the product and the packages it may import, besides itself.
FOUNDATIONS = "bandit"
MAY_IMPORT: dict[str, set[str]] = {
    FOUNDATIONS: set(),
    "bandit.policy": {FOUNDATIONS},
    "bandit.forecast": {FOUNDATIONS, "bandit.policy"},
    "bandit.store": {FOUNDATIONS},
    "bandit.serving": {FOUNDATIONS, "bandit.policy", "bandit.forecast", "bandit.store"},
    "bandit.api": {FOUNDATIONS, "bandit.policy", "bandit.serving", "bandit.store"},
    "bandit.ops": {FOUNDATIONS, "bandit.policy", "bandit.serving", "bandit.store", "bandit.api",
                   "simulations"},
}


def _package(module: str) -> str:
    """The layer a module belongs to: its subpackage of bandit, or the foundations."""
    if module == "bandit.__main__":  # `python -m bandit`: the command line's front door
        return "bandit.ops"
    parts = module.split(".")
    if parts[0] != "bandit":
        return parts[0]
    name = ".".join(parts[:2])
    return name if name in MAY_IMPORT else FOUNDATIONS


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            if node.module in ("bandit", "bandit.policy", "bandit.serving", "bandit.store",
                               "bandit.api", "bandit.ops", "bandit.forecast"):
                found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def _modules() -> list[Path]:
    return sorted((ROOT / "bandit").rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_imports_only_the_layers_below_it(path: Path) -> None:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    own = _package(module)
    allowed = MAY_IMPORT[own] | {own}
    wrong = [f"line {line}: {name}" for name, line in _imports(path)
             if name.split(".")[0] in ("bandit", "simulations")
             and _package(name) not in allowed
             and not (own == FOUNDATIONS and name.split(".")[0] == "bandit"
                      and _package(name) == FOUNDATIONS)]
    assert not wrong, f"{module} ({own}) may import {sorted(allowed)}, not: {wrong}"


def test_the_service_loads_nothing_of_simulations() -> None:
    script = ("import sys, bandit.api.app, bandit.ops.worker;"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'simulations'))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=120)
    assert result.stdout.strip() == "[]"
