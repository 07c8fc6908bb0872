"""Mesh-model checkpoints: ``{"format": "ssrstf-toolkit/mesh", "arch", "encoder_config", "head_config",
"state_dict" (backbone.* + head.*), "metadata" (body model, data, epoch, metrics), "train_state"?}``.

Written atomically, read with ``weights_only=True``; the file rebuilds its own network. The body model is not stored
(SMPL cannot ship): the metadata names the one used in training, and loading uses the body model the caller gives
(default: same resolution as everywhere: path > $SMPL_MODEL_DIR > embedded default) after checking its vertex count.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from body_models import BodyModel, MeanParams, load_body_model
from mesh.head import HeadConfig
from mesh.model import MeshRecovery
from motion.checkpoint import (
    BACKBONE_FORMAT,
    CheckpointError,
    atomic_torch_save,
    load_state_strict,
    read_checkpoint,
)
from motion.config import ConfigError, from_dict
from motion.encoders import build_encoder, config_to_dict, encoder_config_from_dict

MESH_FORMAT = "ssrstf-toolkit/mesh"
MESH_VERSION = 1


def save_mesh_model(path: str | Path, model: MeshRecovery, arch: str, metadata: dict[str, Any],
                    train_state: dict[str, Any] | None = None) -> None:
    """Write a self-describing mesh-model checkpoint atomically (the body model's arrays are not included)."""
    model = getattr(model, "module", model)
    obj: dict[str, Any] = {
        "format": MESH_FORMAT, "version": MESH_VERSION, "arch": arch,
        "encoder_config": config_to_dict(model.backbone.config), "head_config": asdict(model.head.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": {"body_model": model.body.source, "num_vertices": model.body.num_vertices,
                     "torch": str(torch.__version__), **metadata},
    }
    if train_state is not None:
        obj["train_state"] = train_state
    atomic_torch_save(obj, path)


def load_mesh_model(path: str | Path, body: BodyModel | None = None, map_location: str | torch.device = "cpu"
                    ) -> tuple[MeshRecovery, dict[str, Any]]:
    """Rebuild a :class:`MeshRecovery` from ``path``; returns ``(model in eval mode, checkpoint dict)``.

    Raises:
        CheckpointError: missing/corrupt file, not a mesh checkpoint (e.g. an encoder backbone), a body model whose
            vertex count differs from the one the network was trained with, or weights that do not fit.
    """
    obj = read_checkpoint(path, map_location="cpu")
    fmt = obj.get("format")
    if fmt == BACKBONE_FORMAT:
        raise CheckpointError(f"{path}: is an encoder backbone, not a mesh model (fine-tune it with "
                              f"python -m mesh.finetune --backbone {path})")
    if fmt != MESH_FORMAT:
        raise CheckpointError(f"{path}: not a mesh-model checkpoint (format {fmt!r}, expected '{MESH_FORMAT}')")
    try:
        encoder = build_encoder(obj["arch"], encoder_config_from_dict(obj["arch"], obj["encoder_config"]))
        head_cfg = from_dict(HeadConfig, obj["head_config"])
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise CheckpointError(f"{path}: malformed mesh checkpoint ({type(err).__name__}: {err})") from None
    body = body if body is not None else load_body_model()
    trained_v = obj.get("metadata", {}).get("num_vertices")
    if trained_v is not None and trained_v != body.num_vertices:
        raise CheckpointError(f"{path}: trained with a {trained_v}-vertex body model "
                              f"({obj['metadata'].get('body_model')}), but the given one has {body.num_vertices}")
    num_betas = obj["state_dict"]["head.init_shape"].shape[-1]
    placeholder = MeanParams(pose6d=np.zeros((24, 6)), betas=np.zeros(num_betas), source="checkpoint")
    model = MeshRecovery(encoder, body, placeholder, head_cfg)
    try:
        load_state_strict(model, obj["state_dict"])
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return model.to(map_location).eval(), obj
