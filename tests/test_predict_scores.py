"""Score semantics (checked against the model's logits by hand), statuses, windows at contig ends,
input order, and scoring real 1000 Genomes variants on the BRCA1 locus."""

import numpy as np
import pandas as pd
import pysam
import pytest

from genossm.errors import GenossmError
from genossm.score import Genome, score_table, score_vcf, write_scores
from genossm.score.alleles import prepare_alleles
from genossm.score.passes import PassIndex
from genossm.score.variants import llr_passes
from genossm.tokenize import reverse_complement
from predict_helpers import (
    hand_llr, hidden, random_sequence, reverse_complement_text, save_model, window_ids, write_fasta, write_vcf,
)

CONTEXT = 64


def _other(base: str) -> str:
    return "ACGT"[("ACGT".index(base.upper()) + 1) % 4]


def _sequence():
    seq = list(random_sequence(300, seed=1))
    # Sites whose normalization must not move them (checked by hand below): distinct neighbours.
    for start, bases in {168: "ACGT", 178: "GACTGA", 228: "TGCA", 236: "TGCATC", 296: "GACT", 0: "GTCA"}.items():
        seq[start : start + len(bases)] = bases
    seq[242:262] = "N" * 20  # an N run right after the deletion at 240
    return "".join(seq)


SEQ = _sequence()
MT = random_sequence(200, seed=2)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("model"), context_length=CONTEXT)[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    soft = SEQ[:100] + SEQ[100:120].lower() + SEQ[120:]
    path = tmp_path_factory.mktemp("ref") / "ref.fa"
    return write_fasta(path, {"1": soft, "MT": MT}, {"MT": "mitochondrion [topology=circular]"})


# (id, chrom, pos 1-based, ref, alt, expected status per ALT); input deliberately not sorted
CASES = [
    ("snv_mid", "chr1", 150, SEQ[149], _other(SEQ[149]), "ok"),
    ("first", "chr1", 1, SEQ[0], _other(SEQ[0]), "ok"),
    ("last", "chr1", 300, SEQ[299], _other(SEQ[299]), "ok"),
    ("mismatch", "chr1", 50, _other(SEQ[49]), SEQ[49], "ref_mismatch"),
    ("unknown", "chrUn", 5, "A", "C", "unknown_contig"),
    ("sym", "chr1", 60, SEQ[59], "<DEL>", "symbolic"),
    ("star", "chr1", 61, SEQ[60], "*", "symbolic"),
    ("bnd", "chr1", 62, SEQ[61], f"{SEQ[61]}[1:20[", "symbolic"),
    ("noalt", "chr1", 70, SEQ[69], ".", "no_alt"),
    ("past_end", "chr1", 300, SEQ[299] + "A", SEQ[299], "out_of_range"),
    ("same", "chr1", 80, SEQ[79:81], SEQ[79:81], "alt_equals_ref"),
    ("n_alt", "chr1", 90, SEQ[89], "N", "non_acgt"),
    ("long_del", "chr1", 200, SEQ[199:241], SEQ[199], "too_long"),
    ("del_last", "chr1", 298, SEQ[297:300], SEQ[297], "ok"),
    ("ins_last", "chr1", 299, SEQ[298], SEQ[298] + "AG", "ok"),
    ("del_before_n", "chr1", 240, SEQ[239:242], SEQ[239], "ok"),
    ("ins_first", "chr1", 1, SEQ[0], SEQ[0] + "AG", "ok"),
    ("lower", "chr1", 110, SEQ[109].lower(), _other(SEQ[109]), "ok"),
    ("circ", "chrM", 1, MT[0], _other(MT[0]), "ok"),
    ("mnv", "chr1", 170, SEQ[169:171], _other(SEQ[169]) + _other(SEQ[170]), "ok"),
    ("del_mid", "chr1", 180, SEQ[179:183], SEQ[179], "ok"),
    ("ins_mid", "chr1", 230, SEQ[229], SEQ[229] + "TGT", "ok"),
    ("multi", "chr1", 120, SEQ[119], ",".join(b for b in "ACGT" if b != SEQ[119]), "ok"),
]


@pytest.fixture(scope="module")
def vcf(tmp_path_factory):
    rows = [(chrom, pos, name, ref, alt) for name, chrom, pos, ref, alt, _ in CASES]
    return write_vcf(tmp_path_factory.mktemp("vcf") / "cases.vcf", {"chr1": 300, "chrM": 200, "chrUn": None}, rows)


@pytest.fixture(scope="module")
def scored(model, reference, vcf):
    return score_vcf(model, reference, vcf, skip_unknown_contigs=True, progress=False)


def test_windows_past_max_window_run_chunk_by_chunk_with_the_same_scores(model, reference, vcf, scored):
    """Every window (64 bases) past --max-window 24 goes through the layer-by-layer schedule in
    24-base chunks: the llr and embedding distances of the batched path, up to float rounding,
    at contig ends, on the circular contig and for indels alike."""
    scores = ("llr", "cosine_distance")
    batched = score_vcf(model, reference, vcf, skip_unknown_contigs=True, scores=scores, progress=False)
    chunked = score_vcf(model, reference, vcf, skip_unknown_contigs=True, scores=scores, max_window=24,
                        progress=False)
    assert chunked["status"].tolist() == batched["status"].tolist() == scored["status"].tolist()
    for name in scores:
        np.testing.assert_allclose(chunked[name], batched[name], rtol=1e-4, atol=1e-5)


def test_every_case_gets_its_status_in_input_order(scored):
    expected = [(name, status) for name, *_, alt, status in CASES for _ in alt.split(",")]
    assert list(zip(scored["id"], scored["status"])) == expected
    assert list(scored.columns) == ["chrom", "pos", "ref", "alt", "id", "llr", "status"]
    assert scored["chrom"].iloc[0] == "chr1"  # input names and alleles are kept
    ok = scored["status"] == "ok"
    assert scored.loc[ok, "llr"].notna().all() and scored.loc[~ok, "llr"].isna().all()


def _expected(model, seq, p, ref, alt, circular=False):
    """Documented llr for the minimal edit (p 0-based; ref/alt without padding base)."""
    span = max(len(ref), len(alt))
    start = p + span // 2 - CONTEXT // 2
    hap = seq[:p] + alt + seq[p + len(ref) :]
    ref_window = window_ids(seq, start, CONTEXT, circular)
    alt_window = window_ids(hap, start, CONTEXT, circular)
    return hand_llr(model, ref_window, alt_window, p - start, seq[p : p + span], hap[p : p + span])


@pytest.mark.parametrize("name, p, ref, alt", [
    ("snv_mid", 149, SEQ[149], _other(SEQ[149])),
    ("first", 0, SEQ[0], _other(SEQ[0])),  # window half PAD on the left
    ("last", 299, SEQ[299], _other(SEQ[299])),  # half PAD on the right
    ("lower", 109, SEQ[109], _other(SEQ[109])),
    ("mnv", 169, SEQ[169:171], _other(SEQ[169]) + _other(SEQ[170])),
    ("del_mid", 180, SEQ[180:183], ""),
    ("ins_mid", 230, "", "TGT"),
    ("ins_first", 0, "", "GA"),  # G>GAG: the shared suffix G is trimmed first, p = 0
    ("del_last", 298, SEQ[298:300], ""),  # alt span wholly past the contig end: nothing counts, 0
    ("ins_last", 299, "", "AG"),  # ref span half past the contig end: only its first base counts
    ("del_before_n", 240, SEQ[240:242], ""),  # alt span reads the N run that moved up: the same
])
def test_llr_equals_hand_computation_from_logits(model, scored, name, p, ref, alt):
    got = scored.loc[scored["id"] == name, "llr"].item()
    assert got == pytest.approx(_expected(model, SEQ, p, ref, alt), abs=2e-5)


def test_llr_on_a_circular_contig_wraps_the_window(model, scored):
    got = scored.loc[scored["id"] == "circ", "llr"].item()
    assert got == pytest.approx(_expected(model, MT, 0, MT[0], _other(MT[0]), circular=True), abs=2e-5)
    linear = _expected(model, MT, 0, MT[0], _other(MT[0]), circular=False)
    assert abs(got - linear) > 1e-4  # padding would have given another score


def test_multiallelic_site_alts_share_one_pass_per_strand(model, scored):
    rows = scored[scored["id"] == "multi"]
    assert len(rows) == 3
    for alt, got in zip(rows["alt"], rows["llr"]):
        assert got == pytest.approx(_expected(model, SEQ, 119, SEQ[119], alt), abs=2e-5)
    table = pd.DataFrame({"chrom": ["1"] * 3, "pos": [120] * 3, "ref": [SEQ[119]] * 3, "alt": list(rows["alt"])})
    genome = Genome.from_sequences({"1": SEQ})
    _, alleles = prepare_alleles(table, genome, {"1": "1"}, CONTEXT)
    index = PassIndex()
    for allele in alleles:
        llr_passes(allele, index)
    assert len(index) == 2


def test_deletion_and_insertion_scores_are_antisymmetric(model):
    # Deleting bases from R gives A; inserting them into A gives R: the two scores are opposite.
    r = SEQ
    a = SEQ[:180] + SEQ[183:]
    tables = {
        "del": (r, pd.DataFrame({"chrom": ["x"], "pos": [180], "ref": [r[179:183]], "alt": [r[179]]})),
        "ins": (a, pd.DataFrame({"chrom": ["x"], "pos": [180], "ref": [a[179]], "alt": [r[179:183]]})),
    }
    scores = {k: score_table(model, Genome.from_sequences({"x": s}), t, progress=False)["llr"].item()
              for k, (s, t) in tables.items()}
    assert scores["del"] == pytest.approx(-scores["ins"], abs=2e-5)
    assert abs(scores["del"]) > 1e-4


def test_batch_size_and_strand_mirror_do_not_change_scores(model, reference, vcf, scored):
    small = score_vcf(model, reference, vcf, skip_unknown_contigs=True, batch_size=1, progress=False)
    np.testing.assert_allclose(small["llr"], scored["llr"], atol=1e-5)
    # Scoring the reverse-complemented contig gives the same numbers (both strands are averaged).
    table = pd.DataFrame({"chrom": ["x", "x"], "pos": [150, 300 - 150 + 1],
                          "ref": [SEQ[149], reverse_complement_text(SEQ[149])],
                          "alt": [_other(SEQ[149]), reverse_complement_text(_other(SEQ[149]))]})
    genome = Genome.from_sequences({"x": SEQ, "y": reverse_complement_text(SEQ)})
    # an odd window has as many bases on either side of the site, so the two windows mirror exactly
    fwd = score_table(model, genome, table.iloc[:1], context=63, progress=False)["llr"].item()
    rc = score_table(model, genome, table.iloc[1:].assign(chrom="y"), context=63, progress=False)["llr"].item()
    assert fwd == pytest.approx(rc, abs=2e-5)


def test_unknown_contig_is_an_error_by_default(model, reference, vcf):
    with pytest.raises(GenossmError, match=r"cases.vcf: contig 'chrUn' is not in the reference .*skip-unknown-contigs"):
        score_vcf(model, reference, vcf, progress=False)


def test_cosine_distance_is_opt_in_and_matches_hidden_states(model, reference, vcf, scored):
    both = score_vcf(model, reference, vcf, skip_unknown_contigs=True, scores=("llr", "cosine_distance"),
                     radius=4, progress=False)
    np.testing.assert_allclose(both["llr"], scored["llr"], atol=1e-6)
    # by hand for the SNV in the middle: mean last-layer state over the span +- 4, both strands
    start, offset = 149 - CONTEXT // 2, CONTEXT // 2
    ref_w = window_ids(SEQ, start, CONTEXT)
    alt_w = ref_w.copy()
    alt_w[offset] = "ACGT".index(_other(SEQ[149]))

    def embedding(w):
        forward = hidden(model, w, -1)[offset - 4 : offset + 5].mean(0)
        rc = hidden(model, reverse_complement(w), -1)[CONTEXT - offset - 5 : CONTEXT - offset + 4].mean(0)
        return (forward + rc) / 2

    e_ref, e_alt = embedding(ref_w), embedding(alt_w)
    expected = 1 - e_ref @ e_alt / np.linalg.norm(e_ref) / np.linalg.norm(e_alt)
    got = both.loc[both["id"] == "snv_mid", "cosine_distance"].item()
    assert got == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert both.loc[both["status"] != "ok", "cosine_distance"].isna().all()


def test_brca1_1000g_variants(model, shared_data, tmp_path):
    vcf = shared_data / "human_brca1" / "brca1_1kgPhase3_variants.vcf"
    table = score_vcf(model, shared_data / "human_brca1" / "ref_brca1.fa", vcf, context=32, progress=False)
    body = [line.split("\t") for line in open(vcf) if not line.startswith("#")]
    expected = [(f[0], int(f[1]), f[3], alt) for f in body for alt in f[4].split(",")]
    assert list(zip(table["chrom"], table["pos"], table["ref"], table["alt"])) == expected
    # every REF matches; the structural variant is symbolic; indels longer than half the
    # 32-base window are too_long; everything else is scored
    assert (table["status"] != "ref_mismatch").all()
    assert table.loc[table["status"] == "symbolic", "alt"].tolist() == ["<CN0>"]
    long = (table["ref"].str.len() - table["alt"].str.len()).abs() > 16
    assert table.loc[table["status"] == "too_long"].index.tolist() == table.index[long].tolist() != []
    assert table.loc[table["status"] == "ok", "llr"].notna().all() and (table["status"] == "ok").sum() > 2000
    out = tmp_path / "scored.vcf.gz"
    write_scores(table, out, vcf=vcf)
    with pysam.VariantFile(str(out)) as scored:
        records = list(scored)
        assert "GENOSSM_LLR" in scored.header.info and "GENOSSM_STATUS" in scored.header.info
    assert len(records) == len(body)
    # bgzip-compressed and sorted as the input: tabix can index it and fetch a region
    pysam.tabix_index(str(out), preset="vcf", force=True, keep_original=True)
    with pysam.VariantFile(str(out)) as scored:
        assert len(list(scored.fetch("ref_brca1", 40000, 41000))) > 0
    llr = [v for r in records for v in r.info["GENOSSM_LLR"]]
    status = [v for r in records for v in r.info["GENOSSM_STATUS"]]
    assert status == table["status"].tolist()
    np.testing.assert_allclose(np.array(llr, dtype=float), table["llr"], atol=1e-5)


def test_rc_equivariant_model_needs_one_strand_and_gives_the_two_strand_score(tmp_path):
    _, model = save_model(tmp_path / "rc", context_length=CONTEXT, rc_equivariant=True)
    rows = []
    model.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    table = pd.DataFrame({"chrom": ["1", "1"], "pos": [150, 180], "ref": [SEQ[149], SEQ[179:183]],
                          "alt": [_other(SEQ[149]), SEQ[179]]})
    got = score_table(model, Genome.from_sequences({"1": SEQ}), table, progress=False)["llr"]
    assert sum(rows) == 3  # SNV: one masked window; deletion: ref and alt windows; forward strand only
    assert got[0] == pytest.approx(_expected(model, SEQ, 149, SEQ[149], _other(SEQ[149])), abs=2e-5)
    assert got[1] == pytest.approx(_expected(model, SEQ, 180, SEQ[180:183], ""), abs=2e-5)


def test_genome_from_token_store_equals_genome_from_fasta(tmp_path):
    from genossm.store import create_store

    soft = SEQ[:100] + SEQ[100:200].lower() + SEQ[200:]  # soft-masking must not change the ids
    sequences = {"1": soft, "MT": MT}
    write_fasta(tmp_path / "ref.fa", sequences, descriptions={"MT": "topology=circular"})
    create_store(tmp_path / "ref.store", sequences.items(), topology={"MT": "circular"})
    from_fasta, from_store = Genome.open(tmp_path / "ref.fa"), Genome.open(tmp_path / "ref.store")
    assert from_store.lengths == from_fasta.lengths and from_store.topologies == from_fasta.topologies
    for name, length in from_fasta.lengths.items():
        assert np.array_equal(from_store.ids(name), from_fasta.ids(name))
        for start, end in [(-5, 10), (length - 10, length + 5), (0, length)]:  # both contig ends
            assert np.array_equal(from_store.window(name, start, end), from_fasta.window(name, start, end))
