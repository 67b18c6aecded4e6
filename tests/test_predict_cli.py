"""``genossm predict`` end to end: output formats, stdout, one-line errors without partial output,
and multi-process (DDP) scoring that keeps the input order."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pysam
import pytest
import torch
from click.testing import CliRunner

from genossm.cli import main
from predict_helpers import random_sequence, save_model, write_fasta, write_vcf

SEQ = random_sequence(400, seed=3)
ROWS = [("chr7", 300, "b", SEQ[299], "A" if SEQ[299] != "A" else "C"),
        ("chr7", 20, "a", SEQ[19], "G,T" if SEQ[19] in "AC" else "A,C"),
        ("chr7", 100, "c", SEQ[99:102], SEQ[99]),
        ("chr7", 101, "bad", "N", "A")]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_cli")
    model, _ = save_model(root / "model", context_length=32)
    reference = write_fasta(root / "ref.fa", {"7": SEQ})
    vcf = write_vcf(root / "in.vcf", {"chr7": 400}, ROWS)
    return {"model": str(model), "reference": str(reference), "vcf": str(vcf), "root": root}


def _run(inputs, *args):
    argv = ["predict", "-m", inputs["model"], "-r", inputs["reference"], *args, "--no-progress"]
    return CliRunner().invoke(main, argv, catch_exceptions=False)


def test_vcf_to_stdout(inputs, tmp_path):
    result = _run(inputs, "-v", inputs["vcf"], "-o", "-")
    assert result.exit_code == 0, result.stderr
    assert "5 ALT alleles: 4 ok, 1 ref_mismatch" in result.stderr  # the multi-allelic record gives 2
    assert "VCF contig 'chr7' matched to reference contig '7'" in result.stderr
    (tmp_path / "stdout.vcf").write_text(result.stdout)
    with pysam.VariantFile(str(tmp_path / "stdout.vcf")) as vcf:
        assert "GENOSSM_LLR" in vcf.header.info
        records = list(vcf)
    assert [r.id for r in records] == ["b", "a", "c", "bad"]  # input order
    assert records[1].info["GENOSSM_STATUS"] == ("ok", "ok") and records[3].info["GENOSSM_STATUS"] == ("ref_mismatch",)
    assert "##genossm_predict=version=" in result.stdout


@pytest.mark.parametrize("name", ["out.tsv", "out.parquet", "out.bcf"])
def test_table_and_bcf_outputs(inputs, name):
    out = inputs["root"] / name
    result = _run(inputs, "-v", inputs["vcf"], "-o", str(out), "--embedding-distance")
    assert result.exit_code == 0, result.stderr
    if name.endswith(".bcf"):
        with pysam.VariantFile(str(out)) as vcf:
            records = list(vcf)
        assert [r.id for r in records] == ["b", "a", "c", "bad"]
        assert len(records[1].info["GENOSSM_COSDIST"]) == 2
        return
    table = pd.read_csv(out, sep="\t") if name.endswith(".tsv") else pd.read_parquet(out)
    assert list(table.columns) == ["chrom", "pos", "ref", "alt", "id", "llr", "cosine_distance", "status"]
    assert table["id"].tolist() == ["b", "a", "a", "c", "bad"]
    assert table["status"].tolist() == ["ok"] * 4 + ["ref_mismatch"]
    assert table["llr"].isna().tolist() == [False] * 4 + [True]


def test_headerless_vcf_fails_with_one_line_and_no_output(inputs, shared_data):
    out = inputs["root"] / "never.tsv"
    result = _run(inputs, "-v", str(shared_data / "eukaryote_slices" / "C.elegans.vcf.gz"), "-o", str(out))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genossm: error: ") and "C.elegans.vcf.gz: no VCF header" in lines[0]
    assert not out.exists() and not list(out.parent.glob(".never*"))


def test_unknown_contig_and_bad_output_name_fail_cleanly(inputs):
    vcf = write_vcf(inputs["root"] / "unknown.vcf", {}, [("chrZ", 5, ".", "A", "C")] + ROWS[:1])
    out = inputs["root"] / "unknown.tsv"
    result = _run(inputs, "-v", str(vcf), "-o", str(out))
    assert result.exit_code == 2 and "contig 'chrZ' is not in the reference" in result.stderr
    assert not out.exists()
    result = _run(inputs, "-v", str(vcf), "-o", str(out), "--skip-unknown-contigs")
    assert result.exit_code == 0 and pd.read_csv(out, sep="\t")["status"].tolist() == ["unknown_contig", "ok"]
    result = _run(inputs, "-v", inputs["vcf"], "-o", str(inputs["root"] / "out.txt"))
    assert result.exit_code == 2 and "cannot tell the output format" in result.stderr
    result = CliRunner().invoke(main, ["predict", "-m", inputs["reference"], "-r", inputs["reference"], "-v",
                                       inputs["vcf"], "-o", str(out), "--no-progress"])  # -m given the FASTA
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "ref.fa: not a genossm model" in lines[0]
    if not torch.cuda.is_available():
        result = _run(inputs, "-v", inputs["vcf"], "-o", str(out), "--device", "cuda")
        assert result.exit_code == 2 and "no CUDA device is available" in result.stderr


def test_compile_flag_reaches_the_model(inputs, monkeypatch):
    from genossm.model import GenoSSM

    calls = []
    monkeypatch.setattr(GenoSSM, "compile_blocks", lambda self, **options: calls.append(options) or self)
    assert _run(inputs, "-v", inputs["vcf"], "-o", "-").exit_code == 0 and calls == []  # off by default
    result = _run(inputs, "-v", inputs["vcf"], "-o", "-", "--compile")
    assert result.exit_code == 0, result.stderr
    assert calls == [{}] and "5 ALT alleles: 4 ok" in result.stderr
    assert "--compile / --no-compile" in CliRunner().invoke(main, ["predict", "--help"]).output


@pytest.mark.slow
def test_two_process_ddp_keeps_input_order_and_writes_once(inputs, tmp_path):
    """Lightning DDP on two CPU processes (gloo): the same table as one process, on stdout once."""
    script = shutil.which("genossm", path=str(Path(sys.executable).parent)) or shutil.which("genossm")
    assert script, "the genossm console script is installed with the package"
    # batches of 2 windows: the ranks take turns, so the gather has to restore the order
    argv = [script, "predict", "-m", inputs["model"], "-r", inputs["reference"], "-v", inputs["vcf"], "-O", "tsv",
            "--device", "cpu", "--batch-size", "2", "--embedding-distance"]  # progress bars on: stderr only
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([*argv, "-o", str(tmp_path / "one.tsv")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([*argv, "--devices", "2", "-o", "-"], env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout == (tmp_path / "one.tsv").read_text()
