#!/bin/sh
# Writes the locks from pyproject.toml and the *.in files here:
#   requirements/runtime.txt  what `bandit serve` needs, and the build backend;
#   requirements/dev.txt      the same pins, plus the research extra (simulations), the Python
#                             client's dependencies (clients/python) and the test and dev
#                             toolchain.
# Both are universal (any OS, Python >= 3.11) and carry every file's sha256, so pip installs
# exactly these files or nothing (`--require-hashes`).
#
#   sh requirements/lock.sh             after a dependency is added: keeps every existing pin
#   sh requirements/lock.sh --upgrade   the refresh: the newest releases pyproject.toml allows
#
# It runs uv from the dev environment (.venv/bin/uv, pinned in dev.txt), or $UV.
set -eu
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
compile() {
    "$uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
        --custom-compile-command "sh requirements/lock.sh" "$@"
}
compile pyproject.toml requirements/build.in -o requirements/runtime.txt "$@"
# The dev lock is constrained to the runtime lock, so the two never pin different versions.
compile pyproject.toml clients/python/pyproject.toml requirements/build.in requirements/dev.in \
    --extra test \
    -c requirements/runtime.txt -o requirements/dev.txt "$@"
