"""The downstream task: mesh recovery from 2D keypoint sequences, on top of a ``motion`` encoder.

Entry points (``python -m mesh.X``): ``finetune`` (train), ``evaluate`` (metrics and report), ``render`` (videos),
``infer`` (detector files -> meshes in the camera frame). The code behind them, by job:

- ``mesh.network``: the regression head, the mesh-recovery model, its losses and checkpoint files.
- ``mesh.data``: mesh datasets in one schema (MotionBERT pickles, converted 3DPW, synthetic data).
- ``mesh.evaluation``: metrics (pure functions) and evaluation protocols.
- ``mesh.inference``: clip-wise prediction of whole tracks and placement in the camera frame.
- ``mesh.io``: result files and exports (npz, glb, BVH, meshes), detector keypoint files, reading videos.
- ``mesh.vis``: the OpenGL renderer, composed videos and overlays, the browser viewer and the evaluation report.
"""
