#!/usr/bin/env bash
# Set up (once) and run the test suite: creates .venv if needed, installs the project with its dev extra,
# checks style with ruff, then runs pytest. Exit code 5 (no tests collected) is a failure, not a pass.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' >.venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log >&2
    echo "installing the project failed (log above)" >&2
    exit 1
fi
.venv/bin/python -m ruff check .
set +e
.venv/bin/python -m pytest -q "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "pytest collected no tests: failing on purpose" >&2
    exit 1
fi
exit "$code"
