"""GenBank reading through Biopython (plain or gzip). Each record is named by its
ACCESSION.VERSION (the LOCUS name when there is none); its topology comes from the LOCUS line.
GenBank writes ORIGIN in lowercase by convention, so its case carries no soft-mask: sequences
come back uppercase."""

import gzip
import io
import logging
import warnings
import zlib
from dataclasses import dataclass

from genossm.errors import GenossmError
from genossm.io.files import is_gzip, open_input

log = logging.getLogger(__name__)
# Biopython only warns about these; each means sequence is missing, so it is an error here
_TRUNCATION_WARNINGS = ("Premature end of file", "Expected sequence length")


@dataclass(frozen=True)
class GenbankRecord:
    name: str
    description: str
    topology: str  # "linear" or "circular"
    number: int  # 1-based record number within its file


def read_genbank(path):
    """Yield ``(record, sequence str)`` for each record, in file order."""
    from Bio import SeqIO
    from Bio.Seq import UndefinedSequenceError

    handle = open_input(path)
    if is_gzip(path):
        handle = gzip.open(handle)
    number = 0
    with io.TextIOWrapper(handle, encoding="utf-8", errors="replace") as text:
        records = SeqIO.parse(text, "genbank")
        while True:
            where = f"record {number + 1}"
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    entry = next(records, None)
                _check_warnings(caught, path, where)
            except (ValueError, AssertionError) as err:
                raise GenossmError(f"malformed GenBank record: {err}", path=path, where=where) from None
            except (EOFError, OSError, zlib.error) as err:
                raise GenossmError(f"cannot read file: {err}", path=path) from None
            if entry is None:
                break
            number += 1
            name = entry.id if entry.id and entry.id != "<unknown id>" else entry.name
            try:
                sequence = str(entry.seq).upper()
            except UndefinedSequenceError:
                raise GenossmError("record has no sequence (no ORIGIN section)", path=path, where=f"{where} {name!r}") from None
            topology = entry.annotations.get("topology", "linear")
            yield GenbankRecord(name, entry.description, "circular" if topology == "circular" else "linear", number), sequence
    if number == 0:
        raise GenossmError("no GenBank records (expected a LOCUS line)", path=path)


def _check_warnings(caught, path, where):
    """Biopython's parser warnings for one record: truncation is an error, the rest one log line each."""
    for warning in caught:
        message = " ".join(str(warning.message).split())
        if message.startswith(_TRUNCATION_WARNINGS):
            raise GenossmError(f"truncated GenBank record: {message}", path=path, where=where)
        log.warning(f"{path}: {where}: {message}")
