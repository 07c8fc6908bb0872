"""The downstream task: SMPL regression head, mesh-recovery model, datasets, losses, metrics and entry points."""
