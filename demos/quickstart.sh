#!/usr/bin/env bash
# The README's first command: set up, then run the whole pipeline on the embedded default (no SMPL, no datasets):
# synthetic data -> pretrain a small SSR-STF on 2D->3D lifting -> fine-tune mesh recovery -> evaluate under both
# protocols -> render a test sequence -> in-the-wild inference from a detector-format keypoint file (npz, glb, mp4).
# Every number printed here is on SYNTHETIC data, not 3DPW / Human3.6M. Takes a few minutes on 2 CPU cores.
# Outputs: data/synthetic/ and runs/quickstart_*/ (delete runs/quickstart_* to start again).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
SYN=data/synthetic
PRE=runs/quickstart_pretrain
MESH=runs/quickstart_mesh
rm -rf "$PRE" "$MESH" runs/quickstart_infer

echo "== body model"
$PY -m body_models
$PY demos/body_model_demo.py --out runs/quickstart_body_model.png

echo "== synthetic data (3DPW-mesh and H36M-lifting schemas)"
$PY -m motion.synthetic --out "$SYN"

echo "== pretrain SSR-STF-XS on 2D->3D lifting (short schedule)"
$PY -m motion.pretrain --config configs/motion/xs.yaml --name quickstart_pretrain \
    data.path="$SYN/h36m_synthetic.pkl" optim.batch_size=8 optim.lr=0.001 loop.epochs=2 loop.max_steps_per_epoch=40

echo "== fine-tune mesh recovery from the pretrained backbone"
$PY -m mesh.finetune --backbone "$PRE/best.pt" --config configs/mesh/synthetic.yaml --name quickstart_mesh \
    head.hidden_dim=256 optim.batch_size=8 optim.lr_backbone=0.0005 optim.lr_head=0.001 loop.epochs=2 \
    loop.max_steps_per_epoch=30

echo "== evaluate (both protocols) on the synthetic test split"
$PY -m mesh.evaluate --checkpoint "$MESH/best.pt" --data "$SYN/mesh_synthetic.pkl" --protocol motionbert
$PY -m mesh.evaluate --checkpoint "$MESH/best.pt" --data "$SYN/mesh_synthetic.pkl" --protocol full-sequence

echo "== render one test sequence (prediction beside ground truth)"
$PY -m mesh.render --checkpoint "$MESH/best.pt" --data "$SYN/mesh_synthetic.pkl" --split test \
    --sequence synth_test_0000 --out "$MESH/render"

echo "== in-the-wild inference from a detector file (a synthetic test track as its COCO-17 / Halpe-26 detector wrote it)"
$PY -m mesh.keypoints_io --from-synthetic "$SYN/mesh_synthetic.pkl" --split test --sequence synth_test_0001 \
    --out "$MESH/keypoints.json"
$PY -m mesh.infer --keypoints "$MESH/keypoints.json" --checkpoint "$MESH/best.pt" --out runs/quickstart_infer

echo
echo "quickstart done (synthetic data, embedded open body model):"
echo "  body model picture:  runs/quickstart_body_model.png"
echo "  synthetic data:      $SYN/"
echo "  pretrained encoder:  $PRE/best.pt   (metrics: $PRE/metrics.json)"
echo "  mesh model:          $MESH/best.pt  (metrics: $MESH/metrics.json, evaluations: $MESH/eval_*/)"
echo "  render:              $MESH/render/"
echo "  inference outputs:   runs/quickstart_infer/ (npz, glb, mp4 per person)"
