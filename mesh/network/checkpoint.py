"""Mesh-model checkpoints: ``{"format": "ssrstf-toolkit/mesh", "arch", "encoder_config", "head_config",
"state_dict" (backbone.* + head.*), "metadata" (body model, data, epoch, metrics), "train_state"?}``.

Written atomically, read with ``weights_only=True``; the file rebuilds its own network. The body model is not stored
(SMPL cannot ship): the metadata names the one used in training, and loading uses the body model the caller gives
(default: same resolution as everywhere: path > $SMPL_MODEL_DIR > embedded default) after checking its vertex count.

:func:`load_mesh_model` also reads MotionBERT's released mesh fine-tuning checkpoints (``best_epoch.bin``:
``{epoch, lr, optimizer, model: {'module.backbone.*' (DSTformer), 'module.head.*' (SMPLRegressor)}, best_jpe}``,
docs/protocols.md): the DSTformer sizes are read off the tensor shapes, the head is ``SMPLHead(norm='batch')``
with ``hidden_dim`` from ``head.fc1.weight``, and the SMPL model the file embeds (``head.smpl.*``) is ignored apart
from its vertex count.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from body_models import BodyModel, MeanParams, load_body_model
from body_models.joint_sets import keypoint_conversion_of
from mesh.network.head import HeadConfig
from mesh.network.model import MeshRecovery, orientation_of
from motion.checkpoint import (
    BACKBONE_FORMAT,
    CheckpointError,
    atomic_torch_save,
    dstformer_config_from_state,
    float32_state,
    load_state_strict,
    read_checkpoint,
    resolve_model_path,
    save_backbone,
    unwrap_state_dict,
)
from motion.config import ConfigError, from_dict
from motion.encoders import build_encoder, config_to_dict, encoder_config_from_dict

MESH_FORMAT = "ssrstf-toolkit/mesh"
MESH_VERSION = 1
MOTIONBERT_MESH_FORMAT = "motionbert/mesh"  # the format tag given to a loaded MotionBERT file (it carries none)
_MB_SMPL = "head.smpl."  # MotionBERT's head embeds smplx's SMPL module: its buffers are in the state dict
_MB_HEAD_DROPOUT = 0.1  # MotionBERT's mesh configs (no effect in eval mode)
_MB_CLIP_LEN = 16  # MotionBERT's mesh fine-tuning clip length (docs/protocols.md, fine-tuning recipe)


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

    ``path`` is a file written by :func:`save_mesh_model` or a MotionBERT mesh checkpoint (``best_epoch.bin``); for
    the latter the returned dict is ``{"format": "motionbert/mesh", "arch": "dstformer", "encoder_config",
    "head_config", "state_dict", "metadata"}`` (metadata: epoch, lr, best_jpe, body model, clip length 16).

    Raises:
        CheckpointError: missing/corrupt file, not a mesh checkpoint (e.g. an encoder backbone), a body model whose
            vertex count differs from the one the network was trained with, or weights that do not fit.
    """
    path = resolve_model_path(path)
    obj = read_checkpoint(path, map_location="cpu")
    fmt = obj.get("format")
    if fmt is None:
        return _load_motionbert_mesh(path, obj, body, map_location)
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
    obj["state_dict"] = float32_state(obj["state_dict"])  # release files store float16 weights
    num_betas = obj["state_dict"]["head.init_shape"].shape[-1]
    placeholder = MeanParams(pose6d=np.zeros((24, 6)), betas=np.zeros(num_betas), source="checkpoint")
    model = MeshRecovery(encoder, body, placeholder, head_cfg)
    try:
        load_state_strict(model, obj["state_dict"])
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    try:
        model.orientation = orientation_of(obj.get("metadata"))
        model.keypoint_conversion = keypoint_conversion_of(obj.get("metadata"))
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return model.to(map_location).eval(), obj


def _load_motionbert_mesh(path: str | Path, obj: dict[str, Any], body: BodyModel | None,
                          map_location: str | torch.device) -> tuple[MeshRecovery, dict[str, Any]]:
    """A MotionBERT ``MeshRegressor`` checkpoint (no format tag) -> ``(MeshRecovery in eval mode, checkpoint dict)``.

    Key handling: ``head.smpl.*`` (smplx's SMPL buffers and parameters) is dropped after checking its vertex count
    against ``body``; keys our model has but the file lacks are allowed only for the backbone's unused 3D-pose head
    (``backbone.head.*``, kept at its initial values); anything else missing, any unexpected key and any shape
    mismatch is a :class:`CheckpointError` naming the key.
    """
    try:
        state = unwrap_state_dict(obj)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: not a mesh-model checkpoint (no format tag, and {err})") from None
    if "head.fc1.weight" not in state or not any(k.startswith("backbone.") for k in state):
        if any(k.startswith("blocks_st.") for k in state):
            raise CheckpointError(f"{path}: is a MotionBERT encoder backbone (no SMPL head), not a mesh model "
                                  f"(fine-tune it with python -m mesh.finetune --backbone {path})")
        raise CheckpointError(f"{path}: not a mesh-model checkpoint (no format tag '{MESH_FORMAT}', and not a "
                              "MotionBERT mesh checkpoint: no 'backbone.*' and 'head.fc1.weight' keys)")
    backbone_state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    try:
        encoder_cfg = dstformer_config_from_state(backbone_state)
        encoder = build_encoder("dstformer", encoder_config_from_dict("dstformer", encoder_cfg))
        head_cfg = HeadConfig(hidden_dim=int(state["head.fc1.weight"].shape[0]), dropout=_MB_HEAD_DROPOUT,
                              norm="batch")
        num_betas = int(state["head.init_shape"].shape[-1])
    except CheckpointError as err:
        raise CheckpointError(f"{path}: MotionBERT mesh checkpoint: backbone {err}") from None
    except (KeyError, IndexError, TypeError, ValueError, ConfigError) as err:
        raise CheckpointError(f"{path}: malformed MotionBERT mesh checkpoint ({type(err).__name__}: {err})"
                              ) from None
    body = body if body is not None else load_body_model()
    template = state.get(f"{_MB_SMPL}v_template")
    trained_v = int(template.shape[0]) if isinstance(template, torch.Tensor) and template.dim() == 2 else None
    if trained_v is not None and trained_v != body.num_vertices:
        raise CheckpointError(f"{path}: MotionBERT checkpoint trained with a {trained_v}-vertex SMPL model "
                              f"({_MB_SMPL}v_template), but the given body model ({body.source}) has "
                              f"{body.num_vertices} vertices: pass the SMPL model files (--smpl DIR or "
                              "$SMPL_MODEL_DIR)")
    placeholder = MeanParams(pose6d=np.zeros((24, 6)), betas=np.zeros(num_betas), source="checkpoint")
    model = MeshRecovery(encoder, body, placeholder, head_cfg)
    own = model.state_dict()
    net_state = {k: v for k, v in state.items() if not k.startswith(_MB_SMPL)}
    filled = [k for k in own if k not in net_state and k.startswith("backbone.head.")]
    net_state.update({k: own[k] for k in filled})
    try:
        load_state_strict(model, net_state)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: MotionBERT mesh checkpoint: {err}") from None
    epoch = obj.get("epoch")
    metadata: dict[str, Any] = {
        **{k: v for k, v in obj.items() if isinstance(v, int | float | str) and not isinstance(v, bool)},
        "source": f"MotionBERT checkpoint (epoch {epoch if epoch is not None else '?'})", "foreign": True,
        "body_model": (f"SMPL ({trained_v} vertices, as embedded in the MotionBERT checkpoint)" if trained_v
                       else "SMPL (MotionBERT checkpoint; not embedded)"),
        "num_vertices": trained_v, "clip_len": _MB_CLIP_LEN, "filled_from_init": filled,
    }
    ckpt = {"format": MOTIONBERT_MESH_FORMAT, "version": MESH_VERSION, "arch": "dstformer",
            "encoder_config": config_to_dict(encoder.config), "head_config": asdict(head_cfg),
            "state_dict": net_state, "metadata": metadata}
    return model.to(map_location).eval(), ckpt


def export_encoder(path: str | Path, out: str | Path) -> Path:
    """Write the encoder of the mesh model ``path`` as a backbone file (``motion.checkpoint`` format) at ``out``.

    The encoder keeps its 3D-pose head (unused by the mesh model) and the 2D normalisation record, so the file can
    continue lifting pretraining (``motion.pretrain model.init=OUT``) or start another mesh fine-tuning.
    """
    path = resolve_model_path(path)
    obj = read_checkpoint(path, map_location="cpu")
    if obj.get("format") != MESH_FORMAT:
        raise CheckpointError(f"{path}: not a mesh-model checkpoint of this toolkit (format {obj.get('format')!r})")
    try:
        arch, cfg = obj["arch"], obj["encoder_config"]
        state = {k[len("backbone."):]: v for k, v in float32_state(obj["state_dict"]).items()
                 if k.startswith("backbone.")}
        encoder = build_encoder(arch, encoder_config_from_dict(arch, cfg))
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise CheckpointError(f"{path}: malformed mesh checkpoint ({type(err).__name__}: {err})") from None
    try:
        load_state_strict(encoder, state)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    meta = obj.get("metadata", {})
    metadata = {"task": "encoder of a mesh model", "source": str(path),
                **{k: meta[k] for k in ("normalisation", "keypoint_conversion", "synthetic", "epoch") if k in meta}}
    save_backbone(out, encoder, arch, cfg, metadata)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mesh.network.checkpoint",
        description="Export the encoder of a mesh model as a backbone file, e.g. to continue its lifting "
                    "pretraining: python -m mesh.network.checkpoint --encoder-of models/ssrstf_mesh.pt --out enc.pt")
    parser.add_argument("--encoder-of", required=True, help="mesh-model checkpoint")
    parser.add_argument("--out", required=True, help="backbone file to write")
    args = parser.parse_args(argv)
    try:
        out = export_encoder(args.encoder_of, args.out)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
