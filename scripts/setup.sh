#!/usr/bin/env bash
# Create .venv (once) and install the project with its dev extra. Works as root or as a user; needs python3 >= 3.10.
# torch is pinned to 2.13.0 (a CPU wheel on these machines); see README "Set-up". Prints one line per package while
# installing (about 80 s on a fresh machine); the full pip log is .venv/pip-install.log.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
if .venv/bin/python -m pip show --quiet ssrstf-mesh >/dev/null 2>&1 && [ .venv/.installed -nt pyproject.toml ]; then
    exit 0  # installed from this pyproject.toml already
fi
echo "setup: installing the project and its pinned dependencies into .venv"
set +e
.venv/bin/python -m pip install --disable-pip-version-check --progress-bar off -e '.[dev]' 2>&1 \
    | tee .venv/pip-install.log | { grep --line-buffered '^Collecting ' | sed -u 's/^Collecting /setup:   /'; true; }
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    cat .venv/pip-install.log >&2
    echo "setup: installing the project failed (pip log above)" >&2
    exit 1
fi
echo "setup: done"
touch .venv/.installed
