import gzip

import pytest

from genossm.errors import GenossmError
from genossm.io.bed import BedRegion, parse_region, read_bed

LENGTHS = {"chr1": 1000, "chr2": 500, "HLA-A*01:01": 300}


def test_read_bed_columns_comments_and_gzip(tmp_path):
    text = (
        "# comment\ntrack name=x\nbrowser position chr1\n\n"
        "chr1\t0\t10\n"
        "chr1\t5\t5\tins\t0\t+\n"
        "chr2\t100\t500\t.\t0\t-\textra\n"
        "chr2 7 9 spaced\n"
    )
    path = tmp_path / "r.bed"
    path.write_text(text)
    expected = [
        BedRegion("chr1", 0, 10),
        BedRegion("chr1", 5, 5, "ins", "+"),
        BedRegion("chr2", 100, 500, None, "-"),
        BedRegion("chr2", 7, 9, "spaced"),
    ]
    assert read_bed(path) == expected
    assert read_bed(path, LENGTHS) == expected
    (tmp_path / "r.bed.gz").write_bytes(gzip.compress(text.encode()))
    assert read_bed(tmp_path / "r.bed.gz") == expected
    assert str(expected[0]) == "chr1:1-10"  # samtools style, 1-based inclusive


@pytest.mark.parametrize("line, message", [
    ("chr1\t10\t5", "line 2: end 5 < start 10"),
    ("chrZ\t1\t5", "line 2: unknown contig 'chrZ'"),
    ("chr2\t1\t501", "line 2: end 501 is past the end of 'chr2' (length 500)"),
    ("chr1\t-1\t5", "line 2: negative start -1"),
    ("chr1\tone\t5", "line 2: start and end must be integers"),
    ("chr1\t5", "line 2: expected at least 3 columns"),
    ("chr1\t1\t5\tn\t0\t*", "line 2: strand must be '+', '-' or '.'"),
])
def test_bad_bed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.bed"
    path.write_text(f"chr1\t0\t1\n{line}\n")
    with pytest.raises(GenossmError) as err:
        read_bed(path, LENGTHS)
    assert str(err.value).startswith(f"{path}: {message}")


def test_unreadable_bed(tmp_path):
    with pytest.raises(GenossmError, match="cannot read file"):
        read_bed(tmp_path / "missing.bed")


def test_parse_region():
    assert parse_region("chr1:1-10") == BedRegion("chr1", 0, 10)
    assert parse_region("chr1:1,001-2,000") == BedRegion("chr1", 1000, 2000)
    assert parse_region("chr1:100", LENGTHS) == BedRegion("chr1", 99, 1000)
    assert parse_region("chr2", LENGTHS) == BedRegion("chr2", 0, 500)
    assert parse_region("HLA-A*01:01", LENGTHS) == BedRegion("HLA-A*01:01", 0, 300)
    assert parse_region("HLA-A*01:01:5-10", LENGTHS) == BedRegion("HLA-A*01:01", 4, 10)
    assert parse_region("chr1:1000-1000", LENGTHS) == BedRegion("chr1", 999, 1000)  # last base


@pytest.mark.parametrize("text, lengths, message", [
    ("chr1:0-10", None, "start must be >= 1"),
    ("chr1:10-5", None, "end >= start"),
    ("chr1:10-9", None, "end >= start"),  # one before start: empty, not [9, 9)
    ("chr1:a-b", None, "expected chr:start-end"),
    ("chrZ:1-5", LENGTHS, "unknown contig 'chrZ'"),
    ("chr2:1-501", LENGTHS, "past the end"),
    ("chr1", None, "unknown contig"),
])
def test_bad_regions(text, lengths, message):
    with pytest.raises(GenossmError, match=message) as err:
        parse_region(text, lengths)
    assert f"region {text!r}" in str(err.value)


def test_contigs_named_like_header_keywords_are_data(tmp_path):
    path = tmp_path / "r.bed"
    path.write_text("track name=x\nbrowser hide all\ntrack1\t0\t10\nbrowser_2\t1\t5\n")
    assert read_bed(path) == [BedRegion("track1", 0, 10), BedRegion("browser_2", 1, 5)]


def test_corrupt_gzip_bed_is_one_error(tmp_path):
    data = bytearray(gzip.compress(b"chr1\t0\t10\n" * 100))
    data[10] = 0xFF  # first deflate block header: reserved block type
    path = tmp_path / "bad.bed.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(GenossmError, match="cannot read BED file"):
        read_bed(path)
