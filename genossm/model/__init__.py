"""genossm.model: the bidirectional selective-SSM DNA language model (imports no pysam/snakemake)."""

from genossm.model.config import GenoSSMConfig
from genossm.model.genossm import GenoSSM

__all__ = ["GenoSSM", "GenoSSMConfig"]
