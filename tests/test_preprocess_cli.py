"""``genossm preprocess``: every bad input gives one error line naming the file and record/line,
exit code 2, and leaves no output (nor a temporary sibling) behind."""

import gzip
import subprocess
import sys

import pytest
from click.testing import CliRunner

from genossm.cli import main
from genossm.store import TokenStore


def run(*args):
    return CliRunner().invoke(main, ["preprocess", *map(str, args)])


def assert_clean_failure(result, tmp_path, *fragments, out="out"):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genossm: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (tmp_path / out).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{out}.tmp")]


@pytest.fixture
def brca1(shared_data):
    return shared_data / "human_brca1"


@pytest.mark.parametrize("content, fragments", [
    (b"", ["empty.fa: empty file"]),
    (b"ACGT\nACGT\n", ["empty.fa: line 1: not FASTA: expected a '>' header line"]),
    (b">a\nACGT\n>b\nAC\n>a\nGG\n", ["empty.fa: record 3: duplicate sequence name 'a' (first seen as record 1)"]),
    (b">a\nACGT\n>b desc\nACXGT\n", ["empty.fa: record 2 'b': invalid character 'X' at position 2 (0-based)"]),
    (b">a\nAC\n>b\n\n>c\nGT\n", ["empty.fa: record 2 'b': sequence is empty"]),
])
def test_bad_fasta(tmp_path, content, fragments):
    path = tmp_path / "empty.fa"
    path.write_bytes(content)
    assert_clean_failure(run(path, "-o", tmp_path / "out"), tmp_path, *fragments)


def test_truncated_gzip(tmp_path):
    data = gzip.compress(b">chr1\n" + b"ACGTTGCA\n" * 200_000)
    path = tmp_path / "cut.fa.gz"
    path.write_bytes(data[: len(data) - 100])
    assert_clean_failure(run(path, "-o", tmp_path / "out"), tmp_path, "cut.fa.gz: truncated gzip file")


def test_corrupt_gzip_genbank(tmp_path):
    data = bytearray(gzip.compress(b"LOCUS       x 8 bp DNA linear\nORIGIN\n        1 acgtacgt\n//\n" * 50))
    data[10] = 0xFF  # first deflate block header: reserved block type
    path = tmp_path / "bad.gbk.gz"
    path.write_bytes(bytes(data))
    assert_clean_failure(run(path, "--format", "genbank", "-o", tmp_path / "out"), tmp_path,
                         "bad.gbk.gz: cannot read file")


def test_bgzip_cut_between_blocks(tmp_path):
    from Bio import bgzf

    path = tmp_path / "cut.fa.gz"
    with bgzf.BgzfWriter(str(path), "wb") as out:
        out.write(b">chr1\n" + b"ACGTTGCA\n" * 20_000)  # 180 kB: three blocks
    data = path.read_bytes()
    first = int.from_bytes(data[16:18], "little") + 1  # BSIZE + 1: the first block, whole
    path.write_bytes(data[:first])  # a whole block, no end-of-file block: gzip itself sees no cut
    assert_clean_failure(run(path, "-o", tmp_path / "out"), tmp_path,
                         "cut.fa.gz: truncated gzip file (bgzip file without its end-of-file block)")


def test_truncated_genbank(tmp_path):
    lines = ["LOCUS       T4.1       120 bp    DNA     linear   UNK 01-JAN-1980", "ACCESSION   T4",
             "VERSION     T4.1", "ORIGIN", "        1 acgtacgtac gtacgtacgt acgtacgtac gtacgtacgt acgtacgtac gtacgtacgt",
             "       61 acgtacgtac gtacgtacgt acgtacgtac gtacgtacgt acgtacgtac gtacgtacgt", "//"]
    path = tmp_path / "cut.gb"
    path.write_text("\n".join(lines[:5]) + "\n")  # ends inside ORIGIN
    assert_clean_failure(run(path, "-o", tmp_path / "out"), tmp_path,
                         "cut.gb: record 1: truncated GenBank record: Premature end of file")
    path.write_text("\n".join(lines[:5] + lines[6:]) + "\n")  # 60 of the 120 bases LOCUS promises
    assert_clean_failure(run(path, "-o", tmp_path / "out"), tmp_path,
                         "cut.gb: record 1: truncated GenBank record: Expected sequence length 120, found 60")


def test_corrupt_bam_and_unwritable_output(tmp_path, brca1):
    data = bytearray((brca1 / "brca1_HG00096.bam").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(b ^ 0xFF for b in data[middle : middle + 200])
    bam = tmp_path / "corrupt.bam"
    bam.write_bytes(bytes(data))
    assert_clean_failure(run(bam, "-o", tmp_path / "out"), tmp_path, "corrupt.bam: record ", "cannot read alignments")
    (tmp_path / "ok.fa").write_text(">a\nACGT\n")  # -o inside a path that is a file
    assert_clean_failure(run(tmp_path / "ok.fa", "-o", tmp_path / "ok.fa" / "out"), tmp_path,
                         "ok.fa/out: cannot create output")


def test_duplicate_names_across_files(tmp_path):
    (tmp_path / "a.fa").write_text(">x\nACGT\n")
    (tmp_path / "b.fa").write_text(">y\nAC\n>x\nGG\n")
    result = run(tmp_path / "a.fa", tmp_path / "b.fa", "-o", tmp_path / "out")
    assert_clean_failure(result, tmp_path, "b.fa: record 2 'x': duplicate sequence name 'x'", "a.fa")


def test_unreadable_paths(tmp_path):
    assert_clean_failure(run(tmp_path / "missing.fa", "-o", tmp_path / "out"), tmp_path,
                         "missing.fa: cannot read file: No such file or directory")
    (tmp_path / "adir").mkdir()
    assert_clean_failure(run(tmp_path / "adir", "-o", tmp_path / "out"), tmp_path, "adir: cannot read file")
    (tmp_path / "ok.fa").write_text(">a\nACGT\n")
    assert_clean_failure(run(tmp_path / "ok.fa", "-o", tmp_path / "out", "--holdout-bed", tmp_path / "nope.bed"),
                         tmp_path, "nope.bed: cannot read file")


def test_bam_region_without_index(tmp_path, brca1):
    bam = tmp_path / "noindex.bam"
    bam.write_bytes((brca1 / "brca1_HG00096.bam").read_bytes())
    assert_clean_failure(run(bam, "-o", tmp_path / "out", "--region", "ref_brca1:100-200"), tmp_path,
                         "noindex.bam: region query needs an index")


def test_cram_without_reference(tmp_path, brca1):
    import pysam

    cram = tmp_path / "x.cram"
    with pysam.AlignmentFile(str(brca1 / "brca1_HG00096.bam")) as src, \
            pysam.AlignmentFile(str(cram), "wc", template=src, reference_filename=str(brca1 / "ref_brca1.fa")) as out:
        for i, read in enumerate(src.fetch(until_eof=True)):
            if i < 100:
                out.write(read)
    assert_clean_failure(run(cram, "-o", tmp_path / "out"), tmp_path, "x.cram: CRAM input needs --reference")
    assert run(cram, "-o", tmp_path / "ok", "--reference", brca1 / "ref_brca1.fa", "--include-duplicates",
               "-q").exit_code == 0
    assert len(TokenStore.open(tmp_path / "ok")) == 100


@pytest.mark.parametrize("line, fragment", [
    ("ref_brca1\t500\t100\n", "bad.bed: line 2: end 100 < start 500"),
    ("chrZ\t100\t500\n", "bad.bed: line 2: unknown contig 'chrZ'"),
])
@pytest.mark.parametrize("option", ["--regions-bed", "--holdout-bed"])
def test_bad_bed(tmp_path, brca1, line, fragment, option):
    bed = tmp_path / "bad.bed"
    bed.write_text("ref_brca1\t0\t10\n" + line)
    source = brca1 / ("brca1_HG00096.bam" if option == "--regions-bed" else "ref_brca1.fa")
    assert_clean_failure(run(source, "-o", tmp_path / "out", option, bed), tmp_path, fragment)


def test_bad_options(tmp_path, brca1):
    fasta = brca1 / "ref_brca1.fa"
    assert_clean_failure(run(fasta, "-o", tmp_path / "out", "--topology", "round"), tmp_path, "--topology takes")
    assert_clean_failure(run(fasta, "-o", tmp_path / "out", "--holdout-fraction", "1.5"), tmp_path,
                         "holdout fraction must be in (0, 1)")
    assert_clean_failure(run(fasta, "-o", tmp_path / "out", "--min-mapq", "5"), tmp_path,
                         "read filters and regions apply only to BAM")
    (tmp_path / "out").write_text("not a store")
    result = run(fasta, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "not a genossm token store; not replacing it" in result.stderr
    assert (tmp_path / "out").read_text() == "not a store"


def test_preprocess_genome_and_reads(tmp_path, brca1, shared_data):
    ecoli = shared_data / "ecoli" / "GCF_000005845.2_ASM584v2_genomic.fna.gz"
    result = run(ecoli, brca1 / "ref_brca1.fa", "-o", tmp_path / "g", "--topology", "NC_000913.3=circular",
                 "--holdout-fraction", "0.1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "2 contigs, 4,722,840 bases" in result.stderr and "472,284 held-out bases" in result.stderr
    store = TokenStore.open(tmp_path / "g")
    assert [store.topology(n) for n in store.names] == ["circular", "linear"]
    result = run(brca1 / "brca1_HG00101.bam", "-o", tmp_path / "r", "--min-mapq", "20", "--include-duplicates",
                 "--regions-bed", _bed(tmp_path), "--min-base-quality", "10", "-q")
    assert result.exit_code == 0 and result.stderr == ""
    reads = TokenStore.open(tmp_path / "r")
    assert reads.is_reads and reads.manifest["options"]["min_mapq"] == 20
    assert reads.manifest["options"]["include_duplicates"] is True


def _bed(tmp_path):
    path = tmp_path / "r.bed"
    path.write_text("ref_brca1\t1000\t20000\n")
    return path


def test_entry_point_exit_code(tmp_path):
    (tmp_path / "bad.fa").write_text("no header\n")
    command = [sys.executable, "-c", "from genossm.cli import main; main()", "preprocess", str(tmp_path / "bad.fa"),
               "-o", str(tmp_path / "out")]
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"genossm: error: {tmp_path / 'bad.fa'}: line 1: not FASTA: expected a '>' header line"
    assert not (tmp_path / "out").exists()
