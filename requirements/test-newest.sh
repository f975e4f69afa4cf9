#!/bin/sh
# The whole suite against the newest releases that pyproject.toml allows, ignoring the locks:
# an upstream break shows up on the day someone runs this, not in a newcomer's first install.
#
#   sh requirements/test-newest.sh [pytest arguments]
#
# It builds .venv-newest (a fresh venv each time), installs the project unlocked, prints which
# versions differ from requirements/dev.txt, and runs pytest there. When it passes, refresh the
# locks (sh requirements/lock.sh --upgrade); when it fails, what failed is the work to do first.
set -eu
cd "$(dirname "$0")/.."
venv=.venv-newest
python3 -m venv --clear "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet --upgrade --upgrade-strategy eager -e '.[test]'
"$venv/bin/python" - <<'PY'
import re
from importlib.metadata import distributions
from packaging.utils import canonicalize_name

locked = {}
for line in open("requirements/dev.txt"):
    match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
    if match:
        locked.setdefault(canonicalize_name(match[1]), set()).add(match[2])
changed = sorted(
    f"  {name}: {' or '.join(sorted(locked[name]))} -> {d.version}"
    for d in distributions()
    if (name := canonicalize_name(d.metadata["Name"])) in locked and d.version not in locked[name]
)
print("newer than the lock:" if changed else "every package is at its locked version")
print("\n".join(changed))
PY
# The one test that checks the environment matches the lock cannot hold here, by design.
exec "$venv/bin/python" -m pytest \
    --deselect tests/test_packaging.py::test_the_installed_environment_is_the_locked_one "$@"
