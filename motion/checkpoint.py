"""The backbone checkpoint format (``ssrstf.pt``) and loading of published encoder checkpoints.

A file written here is a dict::

    {"format": "ssrstf-toolkit/backbone", "version": 1, "arch": "ssrstf", "config": {...encoder config...},
     "state_dict": {...}, "metadata": {...training data, epoch, metrics...}, "train_state": {...} (optional)}

so it rebuilds its own model with no other input. Files are written atomically (temp file + rename) and read with
``torch.load(weights_only=True)``: nothing in them can run code. Loading also accepts the usual wrappers of published
checkpoints (MotionBERT's ``model_pos``, ``model``, ``state_dict``, a ``module.`` prefix); for those the architecture
is recognised from the key names and, for ``dstformer``, the sizes are read off the tensor shapes.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from motion.encoders import ENCODERS, build_encoder, config_to_dict, encoder_config_from_dict

BACKBONE_FORMAT = "ssrstf-toolkit/backbone"
FORMAT_VERSION = 1
_WRAPPERS = ("model_pos", "model", "state_dict", "backbone")

# The trained open models shipped with the repository (models/README.md is their model card).
SHIPPED_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
SHIPPED_ENCODER = SHIPPED_MODELS_DIR / "ssrstf.pt"
SHIPPED_MESH_MODEL = SHIPPED_MODELS_DIR / "ssrstf_mesh.pt"
# Release files store weight matrices in float16 (half the size; loading casts back to float32); tensors smaller
# than this stay float32 (norm scales, small biases, the mean body shape: little size to gain, and no rounding).
RELEASE_FP16_MIN_ELEMENTS = 256


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, of another kind, or does not fit the model: one line naming it."""


@dataclass
class BackboneInfo:
    """What a loaded backbone file said about itself."""

    path: str
    arch: str
    config: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    format: str = BACKBONE_FORMAT
    train_state: dict[str, Any] | None = None


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with one clear error for a missing, truncated or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if "Unsupported global" in ln]
        if not lines:  # not a refusal: the bytes are not a pickle at all
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                                  f"{str(err).strip().splitlines()[0] if str(err).strip() else 'unpickling failed'}"
                                  ) from None
        raise CheckpointError(f"{path}: refused or unreadable under weights_only=True ({lines[0]})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {first}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def resolve_model_path(path: str | Path) -> Path:
    """``path`` as given when it exists; a bare file name that does not exist is looked up in the shipped
    ``models/`` folder (so ``--backbone ssrstf.pt`` finds ``models/ssrstf.pt`` from anywhere)."""
    path = Path(path)
    if not path.exists() and path.parent == Path(".") and (SHIPPED_MODELS_DIR / path.name).is_file():
        return SHIPPED_MODELS_DIR / path.name
    return path


def export_release(src: str | Path, dst: str | Path, release: dict[str, Any]) -> dict[str, Any]:
    """Write a release copy of a backbone or mesh checkpoint: no optimiser state, weight matrices in float16.

    Args:
        src: a checkpoint written by this toolkit (``best.pt`` of a run).
        dst: the release file (written atomically).
        release: plain data recorded as ``metadata['release']`` (recipe, command, time, machine, metrics).
    Returns:
        The object written.
    """
    obj = read_checkpoint(src)
    if obj.get("format") is None:
        raise CheckpointError(f"{src}: not a checkpoint written by this toolkit (no format tag)")
    obj.pop("train_state", None)
    obj["state_dict"] = {
        k: v.half() if v.is_floating_point() and v.numel() >= RELEASE_FP16_MIN_ELEMENTS else v
        for k, v in obj["state_dict"].items()}
    # A JSON round trip keeps the record to plain types (a str subclass such as torch's version would make the file
    # unreadable under weights_only=True).
    obj["metadata"] = {**obj.get("metadata", {}), "release": json.loads(json.dumps(release))}
    atomic_torch_save(obj, dst)
    return obj


def float32_state(state: dict[str, Any]) -> dict[str, Any]:
    """Release files store float16 weights: cast them back to float32 for the model."""
    return {k: v.float() if isinstance(v, torch.Tensor) and v.dtype == torch.float16 else v for k, v in state.items()}


def save_backbone(path: str | Path, model: nn.Module, arch: str, config: Any,
                  metadata: dict[str, Any] | None = None, train_state: dict[str, Any] | None = None) -> None:
    """Write a self-describing backbone checkpoint (see module docstring), atomically.

    Args:
        model: the encoder (a DDP wrapper is unwrapped).
        arch: registry name ('ssrstf' or 'dstformer').
        config: the encoder config dataclass or dict.
        metadata: plain data (str, numbers, lists, dicts): training data, epoch, metrics...
        train_state: optimizer / scheduler / RNG states for resuming (optional).
    """
    model = getattr(model, "module", model)
    cfg = config if isinstance(config, dict) else config_to_dict(config)
    obj: dict[str, Any] = {
        "format": BACKBONE_FORMAT, "version": FORMAT_VERSION, "arch": arch, "config": cfg,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": {"torch": str(torch.__version__), **(metadata or {})},
    }
    if train_state is not None:
        obj["train_state"] = train_state
    atomic_torch_save(obj, path)


def _strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def unwrap_state_dict(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Find the state dict in a foreign checkpoint (wrapper keys, ``module.`` prefixes)."""
    for key in _WRAPPERS:
        if key in obj and isinstance(obj[key], dict):
            inner = obj[key]
            has_tensors = any(isinstance(v, torch.Tensor) for v in inner.values())
            return _strip_prefix(inner, "module.") if has_tensors else unwrap_state_dict(inner)
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"no state dict found (looked for tensors at the top level and under {_WRAPPERS})")
    return _strip_prefix(tensors, "module.")


def _guess_arch(state: dict[str, torch.Tensor]) -> str:
    if any(k.startswith("blocks_st.") for k in state):
        return "dstformer"
    if any(k.startswith("layers.") for k in state):
        return "ssrstf"
    raise CheckpointError("cannot tell the architecture from the keys (neither 'blocks_st.*' nor 'layers.*'); "
                          "pass arch= and config=")


def dstformer_config_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Read DSTformer sizes off MotionBERT's tensor shapes (its checkpoints carry no config).

    The head count is not visible in the shapes: MotionBERT always uses 8 (the config default); pass ``config=``
    to :func:`load_backbone` otherwise.
    """
    try:
        dim_feat, dim_in = state["joints_embed.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks_st."))
        hidden = state["blocks_st.0.mlp_s.fc1.weight"].shape[0]
        dim_rep = state["pre_logits.fc.weight"].shape[0] if "pre_logits.fc.weight" in state else dim_feat
        cfg = {"dim_in": int(dim_in), "dim_feat": int(dim_feat), "depth": depth, "mlp_ratio": hidden / dim_feat,
               "dim_rep": int(dim_rep), "maxlen": int(state["temp_embed"].shape[1]),
               "num_joints": int(state["pos_embed"].shape[1])}
    except (KeyError, IndexError, ValueError) as err:
        raise CheckpointError(f"not a MotionBERT DSTformer state dict (missing or odd key: {err})") from None
    if "head.weight" in state:
        cfg["dim_out"] = int(state["head.weight"].shape[0])
    return cfg


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict`` that reports shape mismatches, missing and unexpected keys in one clear error."""
    own = model.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and own[k].shape != v.shape]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {', '.join(mismatched[:3])}")
    if missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:5])}")
    if problems:
        raise CheckpointError(f"state dict does not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


def load_backbone(path: str | Path, map_location: str | torch.device = "cpu", arch: str | None = None,
                  config: dict[str, Any] | None = None) -> tuple[nn.Module, BackboneInfo]:
    """Rebuild an encoder from a checkpoint.

    Args:
        path: a file written by :func:`save_backbone`, or a published checkpoint (MotionBERT ``*.bin``...); a bare
            file name that does not exist is looked up in the shipped ``models/`` folder.
        arch: required only for foreign files whose keys do not reveal it; must match a self-describing file.
        config: encoder config for foreign ``ssrstf`` files (``dstformer`` sizes are read off the shapes).
    Returns:
        ``(model, info)``: the model in eval mode on ``map_location``.
    """
    path = resolve_model_path(path)
    obj = read_checkpoint(path, map_location)
    fmt = obj.get("format")
    try:
        if fmt is not None:
            if fmt != BACKBONE_FORMAT:
                raise CheckpointError(f"is a '{fmt}' checkpoint, not an encoder backbone ('{BACKBONE_FORMAT}')")
            if obj.get("version", 0) > FORMAT_VERSION:
                raise CheckpointError(f"format version {obj['version']} is newer than this code ({FORMAT_VERSION})")
            file_arch = obj["arch"]
            if arch is not None and arch != file_arch:
                raise CheckpointError(f"holds a '{file_arch}' encoder, but '{arch}' was asked for")
            state, cfg, meta = float32_state(obj["state_dict"]), obj["config"], obj.get("metadata", {})
        else:
            state = unwrap_state_dict(obj)
            file_arch = arch or _guess_arch(state)
            if file_arch not in ENCODERS:
                raise CheckpointError(f"unknown architecture '{file_arch}' (known: {sorted(ENCODERS)})")
            if config is not None:
                cfg = config
            elif file_arch == "dstformer":
                cfg = dstformer_config_from_state(state)
            else:
                raise CheckpointError(f"a foreign '{file_arch}' checkpoint carries no config: pass config=")
            meta = {"foreign": True, **{k: v for k, v in obj.items() if isinstance(v, int | float | str)}}
        model = build_encoder(file_arch, encoder_config_from_dict(file_arch, cfg))
        load_state_strict(model, state)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: malformed backbone checkpoint ({type(err).__name__}: {err})") from None
    model.to(map_location).eval()
    info = BackboneInfo(path=str(path), arch=file_arch, config=dict(cfg), metadata=meta,
                        format=fmt or "foreign", train_state=obj.get("train_state"))
    return model, info
