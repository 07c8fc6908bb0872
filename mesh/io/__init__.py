"""Files in and out: result npz / glb / BVH / mesh exports, detector keypoint files, the user's video."""
