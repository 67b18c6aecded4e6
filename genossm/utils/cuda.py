"""Small CUDA helpers shared by the benchmarks."""

import torch


def is_out_of_memory(err: BaseException) -> bool:
    """True for a CUDA allocation failure, whether torch raised its own OutOfMemoryError or a
    library (cuBLAS, Triton) reported it as a RuntimeError."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()
