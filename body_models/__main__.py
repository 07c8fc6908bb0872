"""``python -m body_models [--smpl PATH] [--gender G]``: load a body model, print what it is, or one clear error."""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

from body_models.loading import ENV_VAR, BodyModelFileError
from body_models.model import load_body_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m body_models", description=__doc__)
    parser.add_argument("--smpl", default=None, help=f"model file or folder (default: ${ENV_VAR}, then the embedded "
                                                      "open default)")
    parser.add_argument("--gender", default="neutral", choices=["neutral", "male", "female"])
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            body = load_body_model(args.smpl, args.gender)
    except (BodyModelFileError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    rest = body(torch.eye(3).expand(24, 3, 3), torch.zeros(body.num_betas))
    height = (rest.vertices[:, 1].max() - rest.vertices[:, 1].min()).item()
    print(f"source:      {body.source}")
    print(f"vertices:    {body.num_vertices}, faces: {body.faces.shape[0]}, joints: {body.num_joints}, "
          f"betas: {body.num_betas}, pose correctives: {'yes' if body.has_posedirs else 'no'}")
    print(f"rest height: {height:.3f} m")
    return 0


if __name__ == "__main__":
    sys.exit(main())
