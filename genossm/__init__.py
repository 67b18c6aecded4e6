"""genossm: long-context bidirectional selective state-space DNA language models.

Data flow: ``genossm.io`` (readers) -> ``genossm.tokenize`` -> ``genossm.store`` (memory-mapped
token store) -> ``genossm.model`` (blocks over ``genossm.kernels``) -> ``genossm.train``
(Lightning) -> ``genossm.score`` / ``genossm.embed`` -> ``genossm.cli``.
"""

__version__ = "0.1.0"
