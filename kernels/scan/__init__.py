from genossm.kernels.scan import flops  # noqa: F401  registers the scan ops' flop formulas
from genossm.kernels.scan.bidirectional import bidirectional_selective_scan
from genossm.kernels.scan.op import selective_scan, selective_scan_triton
from genossm.kernels.scan.reference import selective_scan_naive, selective_scan_ref

__all__ = ["selective_scan", "bidirectional_selective_scan", "selective_scan_triton", "selective_scan_ref", "selective_scan_naive"]
