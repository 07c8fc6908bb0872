"""Seeing results: the headless OpenGL renderer, composed videos and overlays, the browser viewer, reports."""
