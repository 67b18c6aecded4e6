"""Evaluation suite: long-range recall and held-out masked-base prediction against baselines.

Notebook use::

    from genossm.evaluate import HeldoutConfig, RecallConfig, run_heldout, run_recall
    result = run_recall(RecallConfig.smoke())                     # dict: results, summary, ...
    result = run_heldout(["ecoli.fna.gz"], HeldoutConfig.smoke(), topology="circular")

``genossm evaluate recall`` and ``genossm evaluate heldout`` run these from the command line and
write the result, with the command, commit, device and time (``genossm.evaluate.record``), as JSON.
Imports no pysam, Biopython or snakemake (FASTA input is read without them).
"""

from genossm.evaluate.heldout import HeldoutConfig, run_heldout
from genossm.evaluate.markov import KmerCounts, MarkovModel, select_markov
from genossm.evaluate.metrics import MaskedScore
from genossm.evaluate.recall import RecallConfig, run_recall

__all__ = ["HeldoutConfig", "KmerCounts", "MarkovModel", "MaskedScore", "RecallConfig", "run_heldout", "run_recall",
           "select_markov"]
