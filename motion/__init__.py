"""Motion sequences and the motion encoder: 2D keypoints, SSR-STF, lifting pretraining, synthetic motion."""
