"""Inference on whole tracks: clip-wise prediction with blending, and placement in the camera frame."""
