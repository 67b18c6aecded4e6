"""Embedding tables to parquet (``pandas.read_parquet`` gives the same DataFrame back)."""

import sys

from genossm.errors import GenossmError
from genossm.utils.atomic import atomic_output


def check_output(path):
    """Embeddings are parquet: fail early on another output name."""
    if str(path) != "-" and not str(path).lower().endswith(".parquet"):
        raise GenossmError("embeddings are written as parquet: name the output *.parquet (or '-')", path=path)


def write_embeddings(frame, path, meta: dict | None = None):
    """Write ``frame`` as parquet to ``path`` ('-': stdout) atomically; ``meta`` goes into the
    file's key-value metadata (model, reference, pooling, ...)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_output(path)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if meta:
        extra = {f"genossm.{key}".encode(): str(value).encode() for key, value in meta.items()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    if str(path) == "-":
        pq.write_table(table, sys.stdout.buffer)
        sys.stdout.flush()
        return
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)
