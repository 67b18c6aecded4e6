"""Variant-effect scoring with a genossm model: library functions behind ``genossm predict``.

Notebook use::

    from genossm.score import score_vcf
    table = score_vcf("model_dir", "ref.fa", "variants.vcf.gz")   # pandas DataFrame

See :mod:`genossm.score.variants` for the score definitions, :data:`STATUSES` for the per-ALT
status values, and :func:`write_scores` for the output formats.
"""

from genossm.score.alleles import STATUSES
from genossm.score.genome import Genome
from genossm.score.output import OUTPUT_FORMATS, write_scores
from genossm.score.predict import predict
from genossm.score.variants import DEFAULT_SCORES, SCORES, score_table, score_vcf, status_summary

__all__ = [
    "DEFAULT_SCORES", "Genome", "OUTPUT_FORMATS", "SCORES", "STATUSES", "predict", "score_table",
    "score_vcf", "status_summary", "write_scores",
]
