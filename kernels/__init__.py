"""genossm.kernels: Triton ops, each beside its PyTorch reference (imported as ``genossm.kernels``)."""

from genossm.kernels.scan import (
    bidirectional_selective_scan,
    selective_scan,
    selective_scan_naive,
    selective_scan_ref,
    selective_scan_triton,
)

__all__ = ["selective_scan", "bidirectional_selective_scan", "selective_scan_triton", "selective_scan_ref", "selective_scan_naive"]
