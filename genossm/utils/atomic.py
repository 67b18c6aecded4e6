"""Atomic outputs: write into a temporary sibling, rename into place only on success.

An interrupted or failed command leaves no partial file or directory behind, so Snakemake and
users never mistake a half-written output for a finished one.
"""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from genossm.errors import GenossmError


@contextlib.contextmanager
def atomic_output(path, directory: bool = False):
    """Yield a temporary path next to ``path``; on clean exit rename it onto ``path``.

    ``directory=True`` yields an (existing, empty) temporary directory instead of a file path.
    On any exception the temporary is removed and ``path`` is left untouched.
    """
    path = Path(path)
    prefix = f".{path.name}.tmp-"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix="".join(path.suffixes), dir=path.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as err:  # a parent that is a file, no permission, a read-only file system
        raise GenossmError(f"cannot create output: {err.strerror or err}", path=path) from None
    try:
        yield tmp
        if directory and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
