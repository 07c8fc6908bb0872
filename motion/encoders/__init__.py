"""Motion encoders: SSR-STF (the project's backbone) and MotionBERT's DSTformer, behind one registry.

Both map 2D keypoint clips ``(B, T, 17, 3)`` to a motion representation ``(B, T, 17, 512)``
(``get_representation``) or to 3D poses ``(B, T, 17, 3)`` (``forward``).
"""

from motion.encoders.dstformer import DSTBlock, DSTformer, DSTformerConfig
from motion.encoders.registry import (
    ENCODERS,
    EncoderEntry,
    build_encoder,
    config_to_dict,
    count_macs,
    count_parameters,
    encoder_config_from_dict,
    macs_per_frame,
    set_recompute_blocks,
    set_recompute_mlp,
)
from motion.encoders.ssrstf import (
    LSKA_KERNELS,
    SSRA,
    SSRSTF,
    VARIANTS,
    RepresentationHead,
    SpatioTemporalAttention,
    SSRFormerBlock,
    SSRSTFBlock,
    SSRSTFConfig,
    STFormerBlock,
    lska_split,
)

__all__ = [
    "ENCODERS",
    "LSKA_KERNELS",
    "SSRA",
    "SSRSTF",
    "VARIANTS",
    "DSTBlock",
    "DSTformer",
    "DSTformerConfig",
    "EncoderEntry",
    "RepresentationHead",
    "SSRFormerBlock",
    "SSRSTFBlock",
    "SSRSTFConfig",
    "STFormerBlock",
    "SpatioTemporalAttention",
    "build_encoder",
    "config_to_dict",
    "count_macs",
    "count_parameters",
    "encoder_config_from_dict",
    "lska_split",
    "macs_per_frame",
    "set_recompute_blocks",
    "set_recompute_mlp",
]
