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
