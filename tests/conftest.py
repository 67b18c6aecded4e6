import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels run in the interpreter (must be set before triton.jit runs).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    # pytest-xdist runs one worker per core: more intra-op threads only oversubscribe the CPU
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """Path to ../shared/data (real genomes, reads, variants); skips when absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (real-data tests run in CI)")
    return SHARED_DATA


@pytest.fixture
def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
