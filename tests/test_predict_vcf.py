"""VCF/BCF reading, contig matching, annotated VCF output (genossm.io.vcf) and left-normalization."""

import gzip
import logging

import pysam
import pytest

from genossm.errors import GenossmError
from genossm.io.vcf import InfoField, annotate_vcf, check_contig_lengths, match_contigs, read_variants
from genossm.score.normalize import left_normalize
from genossm.tokenize import decode, encode
from predict_helpers import write_vcf

ROWS = [
    ("c1", 5, "rs1", "A", "C,G"),
    ("c1", 6, ".", "A", "."),
    ("c2", 7, "sv1", "A", "<DEL>"),
    ("c2", 9, "x", "AT", "A"),
]


def test_read_variants_one_row_per_alt_in_file_order(tmp_path):
    path = write_vcf(tmp_path / "v.vcf", {"c1": 100}, ROWS)  # c2 deliberately not declared
    variants = read_variants(path)
    table = variants.table
    assert list(table.columns) == ["chrom", "pos", "id", "ref", "alt"]
    assert table["alt"].tolist() == ["C", "G", ".", "<DEL>", "A"]
    assert table["pos"].tolist() == [5, 5, 6, 7, 9]  # VCF POS, 1-based, as written
    assert table["id"].tolist() == ["rs1", "rs1", None, "sv1", "x"]
    assert variants.n_records == 4 and variants.header_contigs == {"c1": 100}


def test_headerless_vcf_is_one_clear_error(shared_data):
    path = shared_data / "eukaryote_slices" / "C.elegans.vcf.gz"
    with pytest.raises(GenossmError) as err:
        read_variants(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "no VCF header" in message
    assert "I\\t3080\\tgk463204" in message  # shows what the first line holds


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(GenossmError, match="file not found"):
        read_variants(tmp_path / "absent.vcf")
    bad = tmp_path / "bad.vcf"
    bad.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   "c1\t5\t.\tA\tC\t.\t.\t.\nc1\tabc\t.\tA\tC\t.\t.\t.\n")
    with pytest.raises(GenossmError, match=r"bad.vcf: line 4: cannot parse VCF record \"c1\\tabc"):
        read_variants(bad)
    compressed = tmp_path / "bad.vcf.gz"
    pysam.tabix_compress(str(bad), str(compressed))
    with pytest.raises(GenossmError, match="line 4"):
        read_variants(compressed)
    plain = tmp_path / "plain.vcf.gz"
    plain.write_bytes(gzip.compress(bad.read_bytes()))
    with pytest.raises(GenossmError, match="plain gzip: VCF.gz must be bgzip-compressed"):
        read_variants(plain)


def test_match_contigs_chr_prefix_only_when_unambiguous():
    mapping = match_contigs(["chr1", "2", "chrM", "X", "chrUn", "3"], ["1", "chr2", "MT", "X", "3", "chr3"])
    assert mapping == {"chr1": "1", "2": "chr2", "chrM": "MT", "X": "X", "chrUn": None, "3": "3"}
    assert match_contigs(["chr4"], ["4", "Chr4"]) == {"chr4": None}  # two candidates: no guess


def test_header_length_disagreement_warns(shared_data, caplog):
    variants = read_variants(shared_data / "human_brca1" / "brca1_1kgPhase3_variants.vcf")
    with caplog.at_level(logging.WARNING):
        messages = check_contig_lengths(variants.header_contigs, {"ref_brca1": "ref_brca1"}, {"ref_brca1": 81188})
    assert len(messages) == 1 and "171823" in messages[0] and "81188" in messages[0]
    assert "171823" in caplog.text


@pytest.mark.parametrize("fmt", ["vcf", "vcf.gz", "bcf"])
def test_annotate_keeps_records_and_header_lines(tmp_path, fmt):
    source = write_vcf(tmp_path / "in.vcf", {"c1": 100}, ROWS)
    (tmp_path / "in.vcf").write_text(source.read_text().replace("##fileformat=VCFv4.2\n",
                                                                "##fileformat=VCFv4.2\n##source=handmade\n"))
    out = tmp_path / f"out.{fmt}"
    fields = [InfoField("T_SCORE", "Float", "a score"), InfoField("T_STATUS", "String", "a status")]
    values = {"T_SCORE": [0.5, float("nan"), None, None, -2.0], "T_STATUS": ["ok", "x", "no_alt", "symbolic", "ok"]}
    annotate_vcf(source, out, fields, values, meta=[("tool", "test")], contigs=["c1", "c2"])
    with pysam.VariantFile(str(out)) as vcf:
        header = str(vcf.header)
        records = list(vcf)
    assert "##source=handmade" in header and "##tool=test" in header
    assert "##INFO=<ID=T_SCORE,Number=A,Type=Float" in header
    assert [(r.chrom, r.pos, r.id, r.ref, r.alts) for r in records] == [
        ("c1", 5, "rs1", "A", ("C", "G")), ("c1", 6, None, "A", None),
        ("c2", 7, "sv1", "A", ("<DEL>",)), ("c2", 9, "x", "AT", ("A",))]
    assert records[0].info["T_SCORE"] == (0.5, None) and records[0].info["T_STATUS"] == ("ok", "x")
    assert "T_SCORE" not in records[1].info  # no ALT: nothing to annotate, record kept as is
    assert records[2].info["T_SCORE"] == (None,) and records[2].info["T_STATUS"] == ("symbolic",)
    assert records[3].info["T_SCORE"] == (-2.0,)
    assert not list(tmp_path.glob(".out*tmp*"))


@pytest.mark.parametrize("fmt", ["vcf", "bcf"])
def test_annotate_declares_tags_the_input_uses_without_declaring(tmp_path, fmt):
    source = tmp_path / "in.vcf"
    source.write_text("##fileformat=VCFv4.2\n##contig=<ID=c1,length=100>\n"
                      "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                      "c1\t5\t.\tA\tC\t.\tq10\tXX=1;YY\n")
    out = tmp_path / f"out.{fmt}"
    annotate_vcf(source, out, [InfoField("T_SCORE", "Float", "s")], {"T_SCORE": [1.5]})
    with pysam.VariantFile(str(out)) as vcf:
        header = str(vcf.header)
        (record,) = list(vcf)
    assert "##FILTER=<ID=q10" in header and "##INFO=<ID=XX" in header and "##INFO=<ID=YY" in header
    assert list(record.filter) == ["q10"] and record.info["XX"] == "1" and record.info["T_SCORE"] == (1.5,)


def test_annotate_text_output_changes_only_info(tmp_path, shared_data):
    source = shared_data / "human_brca1" / "brca1_1kgPhase3_variants.vcf"
    n = len(read_variants(source).table)
    out = tmp_path / "out.vcf"
    annotate_vcf(source, out, [InfoField("T_STATUS", "String", "s")], {"T_STATUS": ["ok"] * n})
    def body(path, drop_info):
        lines = [line.split("\t") for line in open(path) if not line.startswith("#")]
        return [fields[:7] + fields[8:] for fields in lines] if drop_info else lines
    assert body(source, True) == body(out, True)
    original = [line for line in open(source) if line.startswith("##")]
    written = [line for line in open(out) if line.startswith("##")]
    assert all(line in written for line in original)


def test_annotate_refuses_a_conflicting_existing_field(tmp_path):
    source = write_vcf(tmp_path / "in.vcf", {"c1": 100}, [("c1", 5, ".", "A", "C")])
    source.write_text(source.read_text().replace(
        "#CHROM", '##INFO=<ID=T_SCORE,Number=1,Type=Integer,Description="old">\n#CHROM'))
    with pytest.raises(GenossmError, match="INFO/T_SCORE is already defined"):
        annotate_vcf(source, tmp_path / "o.vcf", [InfoField("T_SCORE", "Float", "s")], {"T_SCORE": [1.0]})
    assert not (tmp_path / "o.vcf").exists()


def _norm(seq, pos1, ref, alt):
    p, r, a = left_normalize(encode(seq), pos1 - 1, encode(ref), encode(alt))
    return p, decode(r), decode(a)


def test_left_normalize():
    seq = "GGGCATTTTTTGCA"
    # deletion of one T anywhere in the run moves to the first T (0-based 5)
    assert _norm(seq, 10, "TT", "T") == (5, "T", "")
    assert _norm(seq, 5, "AT", "A") == (5, "T", "")
    # insertion of CA after a CA repeat unit moves left while the rotation matches
    assert _norm("GGCACAT", 6, "A", "ACA") == (2, "", "CA")
    # right-anchored deletion at the contig start (no base to the left)
    assert _norm("ACGT", 1, "AC", "C") == (0, "A", "")
    # a homopolymer run reaching the contig start stops at 0
    assert _norm("TTTTG", 3, "TT", "T") == (0, "T", "")
    # MNV and SNV written with padding are trimmed on both sides
    assert _norm(seq, 4, "CATT", "CGAT") == (4, "AT", "GA")
    assert _norm(seq, 4, "CA", "CG") == (4, "A", "G")
    # complex indel keeps its left end
    assert _norm(seq, 4, "CAT", "CGGGT") == (4, "A", "GGG")
    assert _norm(seq, 3, "G", "G") == (2, "", "")
