#!/bin/sh
# The dashboard tests drive Debian's Chromium (never a browser downloaded by a test tool).
# Installs it when it is missing; a no-op when /usr/bin/chromium is already there.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    run=""
elif command -v sudo >/dev/null 2>&1; then
    run="sudo"
else
    echo "install-chromium: /usr/bin/chromium is missing; install Debian's chromium package" >&2
    exit 1
fi
echo "install-chromium: installing Debian's chromium package (for the dashboard tests)"
$run env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
