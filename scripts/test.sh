#!/usr/bin/env bash
# Set up (scripts/setup.sh), check style with ruff, run the test suite. Extra arguments go to pytest.
# pytest's exit code 5 (no tests collected) is a failure here, not a pass.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check .
set +e
.venv/bin/python -m pytest -q --durations=10 "$@"  # the slowest tests, to keep the suite short
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "pytest collected no tests: failing on purpose" >&2
    exit 1
fi
exit "$code"
