"""The mesh-recovery network: SMPL-form regression head on encoder features, losses, checkpoint files."""
