#!/usr/bin/env bash
# Create .venv (once) and install the project with its dev extra. Works as root or as a user; needs python3 >= 3.10.
# torch is pinned to 2.13.0 (a CPU wheel on these machines); see README "Set-up".
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' >.venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log >&2
    echo "setup: installing the project failed (pip log above)" >&2
    exit 1
fi
