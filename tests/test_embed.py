"""``genossm embed``: region embeddings (pooling, strands, layers, windows), variant ref/alt
embeddings, parquet round trips and bad input."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from genossm.cli import main
from genossm.embed import embed_regions, embed_variants
from genossm.errors import GenossmError
from genossm.io.bed import BedRegion
from genossm.score import score_vcf
from genossm.tokenize import reverse_complement
from predict_helpers import (
    hidden, random_sequence, reverse_complement_text, save_model, window_ids, write_fasta, write_vcf,
)

SEQ = random_sequence(500, seed=5)
D_MODEL = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    model_dir, model = save_model(root / "model", context_length=48, d_model=D_MODEL)
    reference = write_fasta(root / "ref.fa", {"a": SEQ, "a_rc": reverse_complement_text(SEQ)})
    bed = root / "regions.bed"
    bed.write_text("# comment\nchra\t100\t140\tfirst\t0\t+\na\t10\t31\t.\t0\t-\na\t470\t500\tend\t0\t.\n")
    return {"root": root, "model_dir": str(model_dir), "model": model, "reference": str(reference), "bed": str(bed)}


def _hand_mean(model, start, end, window_start, window_length, layer):
    """Mean hidden state over [start, end) from the window and its reverse complement, by hand."""
    ids = window_ids(SEQ, window_start, window_length)
    lo, hi = start - window_start, end - window_start
    forward = hidden(model, ids, layer)[lo:hi]
    rc = hidden(model, reverse_complement(ids), layer)[window_length - hi : window_length - lo][::-1]
    return (forward + rc) / 2


def test_cli_parquet_round_trips_through_pandas(setup):
    out = setup["root"] / "regions.parquet"
    result = CliRunner().invoke(main, ["embed", "-m", setup["model_dir"], "-r", setup["reference"], "-b", setup["bed"],
                                       "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.stderr
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["chrom", "start", "end", "name"] + [f"emb_{k}" for k in range(D_MODEL)]
    assert len(frame) == 3
    assert frame["chrom"].tolist() == ["chra", "a", "a"]  # names as in the BED (chra matched to a)
    assert frame["name"].isna().tolist() == [False, True, False] and frame["name"][2] == "end"
    assert frame["start"].tolist() == [100, 10, 470] and frame["emb_0"].dtype == np.float32


@pytest.mark.parametrize("layer", [0, -1])
def test_mean_pool_equals_hand_computation(setup, layer):
    regions = [BedRegion("a", 100, 140, "r", "+")]
    frame = embed_regions(setup["model"], setup["reference"], regions, layer=layer, context=64, progress=False)
    # the 40-base region sits in a 64-base window starting 12 bases before it
    expected = _hand_mean(setup["model"], 100, 140, 88, 64, layer).mean(0)
    np.testing.assert_allclose(frame.filter(like="emb_").to_numpy()[0], expected, atol=1e-5)


def test_minus_strand_equals_the_reverse_complement(setup):
    n = len(SEQ)
    # windows reach past the contig ends (PAD) on both sides, and the flank split is odd
    minus = [BedRegion("a", 10, 31, "m1", "-"), BedRegion("a", 470, 500, "m2", "-")]
    plus = [BedRegion("a_rc", n - 31, n - 10, "m1", "+"), BedRegion("a_rc", n - 500, n - 470, "m2", "+")]
    for pool in ("mean", "center", "none"):
        got = embed_regions(setup["model"], setup["reference"], minus, pool=pool, context=47, progress=False)
        want = embed_regions(setup["model"], setup["reference"], plus, pool=pool, context=47, progress=False)
        np.testing.assert_allclose(got.filter(like="emb_").to_numpy(), want.filter(like="emb_").to_numpy(), atol=1e-5)
    # per-base rows of a '-' region run 5'->3' on the minus strand
    assert got["pos"].tolist()[:3] == [30, 29, 28] and want["pos"].tolist()[:3] == [n - 31, n - 30, n - 29]


def test_center_and_none_pooling(setup):
    regions = [BedRegion("a", 200, 211, "odd", "+"), BedRegion("a", 300, 310, "even", "+")]
    per_base = embed_regions(setup["model"], setup["reference"], regions, pool="none", progress=False)
    assert len(per_base) == 21 and per_base["pos"].tolist()[:2] == [200, 201]
    assert per_base.columns[:5].tolist() == ["chrom", "start", "end", "name", "pos"]
    # no context: the region alone is the window
    np.testing.assert_allclose(per_base.filter(like="emb_").to_numpy()[:11],
                               _hand_mean(setup["model"], 200, 211, 200, 11, -1), atol=1e-5)
    center = embed_regions(setup["model"], setup["reference"], regions, pool="center", progress=False)
    values = per_base.filter(like="emb_").to_numpy()
    np.testing.assert_allclose(center.filter(like="emb_").to_numpy(), values[[5, 11 + 5]], atol=1e-6)


@pytest.mark.parametrize("layer", [0, 1, -1])
def test_windows_past_max_window_run_chunk_by_chunk(setup, layer):
    """Windows longer than max_window (48 and 64 bases here, in 20-base chunks) give the batched
    path's embeddings: every pooling, both strands, windows reaching past the contig ends."""
    regions = [BedRegion("a", 100, 140, "r", "+"), BedRegion("a", 10, 31, "m1", "-"),
               BedRegion("a", 470, 500, "m2", "-")]
    for pool in ("mean", "center", "none"):
        kwargs = dict(pool=pool, layer=layer, context=48, progress=False)
        batched = embed_regions(setup["model"], setup["reference"], regions, **kwargs)
        chunked = embed_regions(setup["model"], setup["reference"], regions, max_window=20, **kwargs)
        assert chunked.drop(columns=[c for c in chunked if c.startswith("emb_")]).equals(
            batched.drop(columns=[c for c in batched if c.startswith("emb_")]))
        np.testing.assert_allclose(chunked.filter(like="emb_").to_numpy(), batched.filter(like="emb_").to_numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_cli_max_window(setup):
    out, whole = setup["root"] / "chunked.parquet", setup["root"] / "whole.parquet"
    for path, extra in ((out, ["--max-window", "16"]), (whole, [])):
        result = CliRunner().invoke(main, ["embed", "-m", setup["model_dir"], "-r", setup["reference"], "-b",
                                           setup["bed"], "--context", "64", "-o", str(path), "--no-progress", *extra])
        assert result.exit_code == 0, result.stderr
    np.testing.assert_allclose(pd.read_parquet(out).filter(like="emb_").to_numpy(),
                               pd.read_parquet(whole).filter(like="emb_").to_numpy(), rtol=1e-4, atol=1e-5)


def test_variant_embeddings_give_predicts_cosine_distance(setup):
    other = {b: "ACGT"[("ACGT".index(b) + 1) % 4] for b in "ACGT"}
    vcf = write_vcf(setup["root"] / "v.vcf", {"a": 500},
                    [("a", 250, "s", SEQ[249], other[SEQ[249]]), ("a", 260, "d", SEQ[259:262], SEQ[259]),
                     ("a", 270, "x", SEQ[269], "<DEL>")])
    frame = embed_variants(setup["model"], setup["reference"], vcf, progress=False)
    assert frame.columns[:6].tolist() == ["chrom", "pos", "ref", "alt", "id", "status"]
    assert frame.shape == (3, 6 + 2 * D_MODEL) and frame["status"].tolist() == ["ok", "ok", "symbolic"]
    ref, alt = frame.filter(like="ref_emb_").to_numpy(float), frame.filter(like="alt_emb_").to_numpy(float)
    cosine = 1 - (ref * alt).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(alt, axis=1)
    scores = score_vcf(setup["model"], setup["reference"], vcf, scores=("cosine_distance",), progress=False)
    np.testing.assert_allclose(cosine[:2], scores["cosine_distance"][:2], rtol=1e-4, atol=1e-7)
    assert np.isnan(ref[2]).all()


def test_compile_flag_reaches_the_model(setup, monkeypatch):
    from genossm.model import GenoSSM

    calls = []
    monkeypatch.setattr(GenoSSM, "compile_blocks", lambda self, **options: calls.append(options) or self)
    argv = ["embed", "-m", setup["model_dir"], "-r", setup["reference"], "-b", setup["bed"], "--no-progress"]
    out = setup["root"] / "compiled.parquet"
    assert CliRunner().invoke(main, [*argv, "-o", str(out)]).exit_code == 0 and calls == []  # off by default
    result = CliRunner().invoke(main, [*argv, "-o", str(out), "--compile"])
    assert result.exit_code == 0, result.stderr
    assert calls == [{}] and len(pd.read_parquet(out)) == 3
    assert "--compile / --no-compile" in CliRunner().invoke(main, ["embed", "--help"]).output


def test_bad_regions_and_options(setup):
    bed = setup["root"] / "bad.bed"
    bed.write_text("a\t1\t5\nzz\t1\t5\n")
    with pytest.raises(GenossmError, match=r"bad.bed: line 2: unknown contig 'zz'"):
        embed_regions(setup["model"], setup["reference"], str(bed), progress=False)
    bed.write_text("a\t490\t501\n")
    with pytest.raises(GenossmError, match=r"line 1: end 501 is past the end of 'a'"):
        embed_regions(setup["model"], setup["reference"], str(bed), progress=False)
    bed.write_text("a\t1\t5\na\t10\t10\n")  # a zero-length interval: legal BED, nothing to embed
    with pytest.raises(GenossmError, match=r"bad.bed: line 2: empty interval \(start = end = 10\)"):
        embed_regions(setup["model"], setup["reference"], str(bed), progress=False)
    with pytest.raises(GenossmError, match=r"empty region \(start 5, end 5, 0-based half-open\)"):
        embed_regions(setup["model"], setup["reference"], [BedRegion("a", 5, 5)], progress=False)
    with pytest.raises(GenossmError, match="layer 3 out of range"):
        embed_regions(setup["model"], setup["reference"], [BedRegion("a", 5, 9)], layer=3, progress=False)
    out = setup["root"] / "x.tsv"
    result = CliRunner().invoke(main, ["embed", "-m", setup["model_dir"], "-r", setup["reference"], "-b", setup["bed"],
                                       "-o", str(out)])
    assert result.exit_code == 2 and "parquet" in result.stderr and not out.exists()
