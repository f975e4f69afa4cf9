#!/bin/sh
# What the tests need beyond Python, from Debian's packages, installed when missing (a no-op
# when everything is there):
# - chromium: the dashboard tests drive it (never a browser downloaded by a test tool);
# - curl and jq: the documentation's examples are run as written, top to bottom.
set -eu
missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v jq >/dev/null 2>&1 || missing="$missing jq"
if [ -z "$missing" ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    run=""
elif command -v sudo >/dev/null 2>&1; then
    run="sudo"
else
    echo "install-system: missing Debian packages:$missing; install them with apt-get" >&2
    exit 1
fi
echo "install-system: installing Debian packages:$missing (for the tests)"
$run env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086 # one word per package
$run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
