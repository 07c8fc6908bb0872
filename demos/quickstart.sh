#!/usr/bin/env bash
# The README's first command: set up, then run the pipeline on the embedded default (no SMPL, no datasets, nothing
# downloaded) with the shipped open models (models/README.md):
#   synthetic data -> fine-tune mesh recovery from the shipped encoder (python -m mesh.finetune --backbone ssrstf.pt)
#   -> evaluate it and the shipped mesh model -> render a test sequence with the shipped mesh model
#   -> in-the-wild inference with the shipped mesh model from a detector-format keypoint file (npz, glb, mp4).
# Every number printed here is on SYNTHETIC data, not 3DPW / Human3.6M. About 5 minutes on 2 CPU cores.
# Outputs: data/synthetic/ and runs/quickstart_*/ (delete runs/quickstart_* to start again).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
PY=.venv/bin/python
SYN=data/synthetic
MESH=runs/quickstart_mesh
rm -rf "$MESH" runs/quickstart_shipped runs/quickstart_infer

echo "== body model"
$PY -m body_models
$PY demos/body_model_demo.py --out runs/quickstart_body_model.png

echo "== synthetic data (3DPW-mesh and H36M-lifting schemas)"
$PY -m motion.synthetic --out "$SYN" --workers 2

echo "== fine-tune mesh recovery from the shipped encoder (models/ssrstf.pt), a short schedule"
$PY -m mesh.finetune --backbone ssrstf.pt --config configs/mesh/open.yaml --name quickstart_mesh \
    data.synthetic_dir="$SYN" optim.batch_size=16 loop.epochs=3 loop.max_steps_per_epoch=40

echo "== evaluate on the synthetic test split: the model just fine-tuned, then the shipped mesh model"
$PY -m mesh.evaluate --checkpoint "$MESH/best.pt" --data "$SYN/mesh_synthetic.pkl" --protocol motionbert
$PY -m mesh.evaluate --data "$SYN/mesh_synthetic.pkl" --protocol motionbert --out runs/quickstart_shipped/eval

echo "== render one test sequence with the shipped mesh model (prediction beside ground truth)"
$PY -m mesh.render --data "$SYN/mesh_synthetic.pkl" --split test --sequence synth_test_0000 \
    --out runs/quickstart_shipped/render

echo "== in-the-wild inference from a detector file (a synthetic test track as its COCO-17 detector wrote it),"
echo "   the network's pose then fitted to the keypoints (--refine)"
$PY -m mesh.io.keypoints --from-synthetic "$SYN/mesh_synthetic.pkl" --split test --sequence synth_test_0001 \
    --out runs/quickstart_shipped/keypoints.json
$PY -m mesh.infer --keypoints runs/quickstart_shipped/keypoints.json --out runs/quickstart_infer --overlay --refine

echo
echo "quickstart done in $(( $(date +%s) - start )) s (synthetic data, embedded open body model, shipped models):"
echo "  body model picture:  runs/quickstart_body_model.png"
echo "  synthetic data:      $SYN/"
echo "  fine-tuned model:    $MESH/best.pt  (metrics: $MESH/metrics.json, evaluation: $MESH/eval_*/)"
echo "  shipped mesh model:  models/ssrstf_mesh.pt  (evaluation: runs/quickstart_shipped/eval/)"
echo "  render:              runs/quickstart_shipped/render/"
echo "  inference outputs:   runs/quickstart_infer/ (npz, glb, viewer.html, render.mp4 per person; overlay.mp4)"
