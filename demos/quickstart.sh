#!/usr/bin/env bash
# The README's first command: set up, then run the main job on the embedded default (no SMPL, no datasets).
# Currently: synthetic data generation (3DPW-mesh and H36M-lifting schemas) and a body-model picture.
# Outputs go to data/synthetic/ and runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
$PY -m body_models
$PY -m motion.synthetic --out data/synthetic
$PY demos/body_model_demo.py --out runs/quickstart/body_model.png
echo "quickstart done: data in data/synthetic/, picture in runs/quickstart/body_model.png (embedded default, synthetic)"
