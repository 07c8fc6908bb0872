"""Mesh-recovery datasets: one schema for MotionBERT pickles, converted 3DPW and synthetic data."""
