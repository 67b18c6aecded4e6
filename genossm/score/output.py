"""Writing score tables: annotated VCF/VCF.gz/BCF (every input record and header line kept, one
``Number=A`` INFO field per score plus the status), TSV or parquet (columns chrom, pos, ref, alt,
id, each score, status). ``-`` writes to stdout; files are written atomically.
"""

import sys

from genossm import __version__
from genossm.errors import GenossmError
from genossm.io.vcf import VCF_FORMATS, InfoField, annotate_vcf, vcf_format_of
from genossm.score.alleles import STATUSES
from genossm.score.variants import SCORES
from genossm.utils.atomic import atomic_output

OUTPUT_FORMATS = VCF_FORMATS + ("tsv", "parquet")
INFO_KEYS = {"llr": "GENOSSM_LLR", "cosine_distance": "GENOSSM_COSDIST", "status": "GENOSSM_STATUS"}


def output_format(path, fmt=None) -> str:
    """The output format: ``fmt`` if given, else from the file name; stdout ('-') defaults to VCF."""
    if fmt is None:
        name = str(path).lower()
        if name == "-":
            return "vcf"
        fmt = vcf_format_of(name)
        if fmt is None:
            fmt = "tsv" if name.endswith((".tsv", ".tsv.gz")) else "parquet" if name.endswith(".parquet") else None
        if fmt is None:
            names = ", .".join(OUTPUT_FORMATS)
            raise GenossmError(f"cannot tell the output format from the name; use one of .{names}", path=path)
    if fmt not in OUTPUT_FORMATS:
        raise GenossmError(f"unknown output format {fmt!r}; use one of {', '.join(OUTPUT_FORMATS)}", path=path)
    return fmt


def write_scores(table, path, *, fmt=None, vcf=None, meta=(), threads: int = 0):
    """Write a :func:`genossm.score.score_vcf` table to ``path`` ('-': stdout).

    VCF formats copy the input ``vcf`` and add the INFO fields (``meta``: extra ``##key=value``
    header lines). TSV (gzip-compressed when named .tsv.gz) writes missing values as ``NA``.
    """
    fmt = output_format(path, fmt)
    scores = [name for name in SCORES if name in table.columns]
    if fmt in VCF_FORMATS:
        if vcf is None:
            raise GenossmError("VCF output needs the input VCF to copy records from", path=path)
        fields = [InfoField(INFO_KEYS[name], "Float", f"genossm {__version__}: {SCORES[name]}") for name in scores]
        statuses = ", ".join(STATUSES)
        description = f"genossm scoring status per ALT: one of {statuses} (see genossm.score.STATUSES)"
        fields.append(InfoField(INFO_KEYS["status"], "String", description))
        values = {INFO_KEYS[name]: table[name].to_numpy() for name in scores + ["status"]}
        annotate_vcf(vcf, path, fields, values, fmt=fmt, meta=meta, contigs=table["chrom"].unique(), threads=threads)
        return
    if str(path) == "-":
        _write_table(table, sys.stdout.buffer, fmt)
        sys.stdout.flush()
        return
    with atomic_output(path) as tmp:
        _write_table(table, tmp, fmt)


def _write_table(table, target, fmt):
    if fmt == "tsv":
        table.to_csv(target, sep="\t", index=False, na_rep="NA", float_format="%.6g")
    else:
        table.to_parquet(target, index=False)
