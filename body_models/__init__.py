"""Everything about the body: SMPL-form body models (real SMPL or the embedded open default), joint sets, rotations.

Knows nothing of networks. Typical use::

    from body_models import load_body_model
    body = load_body_model()                 # explicit path > $SMPL_MODEL_DIR > embedded open default
    out = body(rotmats, betas)               # rotmats (..., 24, 3, 3), betas (..., 10)
    out.vertices, out.joints, out.joints_h36m
"""

from body_models.joint_sets import (
    COCO17,
    H36M17,
    H36M_EVAL_S14,
    H36M_TO_LSP14,
    HALPE26,
    JOINT_SETS,
    LSP14,
    OPENPOSE18,
    SMPL24,
    JointSet,
    convert_joints,
    convert_keypoints,
    get_joint_set,
)
from body_models.loading import (
    BodyModelData,
    BodyModelFileError,
    MeanParams,
    load_mean_params,
    load_model_data,
    load_spin_regressor,
    resolve_model_path,
)
from body_models.model import BodyModel, BodyModelOutput, load_body_model
from body_models.safe_pickle import UnsafePickleError, safe_load_pickle

__all__ = [
    "COCO17", "H36M17", "H36M_EVAL_S14", "H36M_TO_LSP14", "HALPE26", "JOINT_SETS", "LSP14", "OPENPOSE18", "SMPL24",
    "BodyModel", "BodyModelData", "BodyModelFileError", "BodyModelOutput", "JointSet", "MeanParams",
    "UnsafePickleError", "convert_joints", "convert_keypoints", "get_joint_set", "load_body_model",
    "load_mean_params", "load_model_data", "load_spin_regressor", "resolve_model_path", "safe_load_pickle",
]
