"""Mesh metrics (pure functions, per frame) and the evaluation protocols built on them."""
