from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Test helpers (fake SMPL files) live beside the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small synthetic dataset (both schemas) from the embedded default body model, made once per session."""
    from motion.synthetic import generate_dataset

    folder = tmp_path_factory.mktemp("synthetic")
    return generate_dataset(folder, seed=0, sequences={"train": 24, "validation": 6, "test": 6, "test_heldout": 2})


# The small encoder every training test uses: SSR-STF-XS cut to 2 blocks, on 16-frame clips (the mesh clip length).
SMALL_ENCODER = "{variant: XS, depth: 2}"


@pytest.fixture(scope="session")
def pretrained_encoder(synthetic_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SSR-STF pretrained on the synthetic 2D->3D lifting data (about 2 minutes on 2 cores): its run folder.

    Shared by the pretraining test (it must lift far better than the mean pose) and the fine-tuning test (it must
    beat a random backbone). 12 epochs of 45 steps: with ~45 steps the encoder stayed at the mean pose and gave no
    gain; with 10 epochs (test P1 136 mm) 3 fine-tuning epochs were not enough for the head to learn the global
    orientation; with 12 (P1 122.5 mm) they were (see tests/test_finetune.py).
    """
    from motion.pretrain import main as pretrain

    out = tmp_path_factory.mktemp("pretrain")
    repo = Path(__file__).resolve().parents[1]
    assert pretrain(["--config", str(repo / "configs/motion/xs.yaml"), "--name", "enc", "--out-dir", str(out),
                     f"data.path={synthetic_data['lifting']}", f"model.encoder={SMALL_ENCODER}", "data.clip_len=16",
                     "loop.epochs=12", "optim.lr=0.002", "optim.batch_size=16"]) == 0
    return out / "enc"
