import gzip
import shutil
import zlib

import numpy as np
import pytest

from genossm.errors import GenossmError
from genossm.io import files
from genossm.io.fasta import header_topology, is_bgzip, iter_fasta, open_reference, read_fasta
from genossm.store import create_store


INFLATERS = [zlib] + ([files.inflate_lib] if files.inflate_lib is not zlib else [])


@pytest.fixture(params=INFLATERS, ids=lambda lib: lib.__name__)
def inflater(request, monkeypatch):
    """Run a gzip test under ISA-L (when installed) and under the stdlib zlib fallback."""
    monkeypatch.setattr(files, "inflate_lib", request.param)


def _random_fasta(rng, records=6):
    """(text, [(name, description, sequence)]) with ragged line widths, blank lines and CRLF."""
    entries, parts = [], []
    for i in range(records):
        seq = "".join(rng.choice(list("ACGTNacgtn"), int(rng.integers(1, 5000))))
        name, description = f"seq{i}", ("circular plasmid" if i == 2 else f"desc {i}")
        entries.append((name, description, seq))
        width = int(rng.integers(1, 120))
        lines = [seq[j : j + width] for j in range(0, len(seq), width)]
        newline = "\r\n" if i == 3 else "\n"
        parts.append(f">{name} {description}{newline}" + newline.join(lines) + newline + ("\n" if i % 2 else ""))
    return "".join(parts), entries


def _parse(path):
    return [(r.name, r.description, seq.decode()) for r, seq in read_fasta(path)]


def test_header_topology():
    assert header_topology("E. coli chromosome, complete genome") == "linear"
    assert header_topology("plasmid pX circular") == "circular"
    assert header_topology("[topology=circular] [location=mitochondrion]") == "circular"
    assert header_topology("TOPOLOGY=CIRCULAR") == "circular"
    assert header_topology("topology=linear") == "linear"
    assert header_topology("") == "linear"


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 20])
def test_multi_record_across_block_boundaries(tmp_path, monkeypatch, block, inflater):
    # Tiny blocks put '>' , header ends and line breaks on every possible block boundary.
    monkeypatch.setattr(files, "_PLAIN_BLOCK", block)
    monkeypatch.setattr(files, "_RAW_BLOCK", block)
    text, entries = _random_fasta(np.random.default_rng(block), records=6 if block > 1 else 3)
    plain = tmp_path / "x.fa"
    plain.write_text(text, newline="")
    packed = tmp_path / "x.fa.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    assert _parse(plain) == entries
    assert _parse(packed) == entries
    records = [record for record, chunks in iter_fasta(plain) if list(chunks) is not None]
    assert [r.number for r in records] == list(range(1, len(entries) + 1))
    assert [r.topology for r in records][2] == "circular"


def test_bgzip_multi_member(tmp_path, inflater):
    import pysam

    text, entries = _random_fasta(np.random.default_rng(3), records=20)
    plain = tmp_path / "x.fa"
    plain.write_text(text, newline="")
    pysam.tabix_compress(str(plain), str(tmp_path / "x.fa.bgz"))
    assert is_bgzip(tmp_path / "x.fa.bgz") and not is_bgzip(plain)
    assert _parse(tmp_path / "x.fa.bgz") == entries


def test_empty_record_and_header_only_file(tmp_path):
    path = tmp_path / "x.fa"
    path.write_text(">a\n>b desc\nAC\n>c")
    assert _parse(path) == [("a", "", ""), ("b", "desc", "AC"), ("c", "", "")]


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"\n\n  \n", "no FASTA records"),
    (b"ACGT\n>a\nAC\n", "line 1: not FASTA: expected a '>' header line"),
    (b"\n\nACGT\n", "line 3: not FASTA: expected a '>' header line"),
    (b">a\nAC\n> \nGT\n", "record 2: empty sequence name"),
    (b">a\nAC\n>b\nGG\n>a x\nTT\n", "record 3: duplicate sequence name 'a' (first seen as record 1)"),
])
def test_bad_fasta(tmp_path, content, message):
    path = tmp_path / "bad.fa"
    path.write_bytes(content)
    with pytest.raises(GenossmError) as err:
        _parse(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_truncated_and_corrupt_gzip(tmp_path, inflater):
    data = gzip.compress(b">a\n" + b"ACGT" * 100000)
    (tmp_path / "cut.fa.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(GenossmError, match=r"cut\.fa\.gz: truncated gzip file"):
        _parse(tmp_path / "cut.fa.gz")
    (tmp_path / "bad.fa.gz").write_bytes(data[:20] + bytes(200) + data[220:])
    with pytest.raises(GenossmError, match=r"bad\.fa\.gz: corrupt gzip data"):
        _parse(tmp_path / "bad.fa.gz")


def test_unreadable_paths(tmp_path):
    with pytest.raises(GenossmError, match="missing.fa: cannot read file: No such file"):
        _parse(tmp_path / "missing.fa")
    with pytest.raises(GenossmError, match="cannot read file: Is a directory"):
        _parse(tmp_path)


@pytest.fixture
def brca1(shared_data):
    return shared_data / "human_brca1" / "ref_brca1.fa"


def _intervals(length):
    rng = np.random.default_rng(0)
    starts = rng.integers(0, length, 20)
    spans = [(0, 1), (0, 1000), (length - 1, length), (length - 1000, length), (0, length), (5, 5)]
    return spans + [(int(s), int(min(length, s + rng.integers(1, 5000)))) for s in starts]


def test_references_agree_with_pysam(tmp_path, brca1):
    import pysam

    truth = pysam.FastaFile(str(brca1))
    name, length = truth.references[0], truth.lengths[0]
    plain_copy = tmp_path / "copy.fa"  # no .fai: read into memory
    shutil.copyfile(brca1, plain_copy)
    gz = tmp_path / "ref.fa.gz"
    gz.write_bytes(gzip.compress(brca1.read_bytes()))
    bgz = tmp_path / "ref.fa.bgz"
    pysam.tabix_compress(str(brca1), str(bgz))
    pysam.faidx(str(bgz))  # writes .fai and .gzi
    store = tmp_path / "store"
    create_store(store, [(n, s) for n, s in ((name, truth.fetch(name)),)])
    backends = {brca1: "Faidx", plain_copy: "Memory", gz: "Memory", bgz: "Faidx", store: "Store"}
    for source, backend in backends.items():
        with open_reference(source) as ref:
            assert type(ref).__name__ == f"_{backend}Reference"
            assert ref.names == [name] and ref.length(name) == length
            assert ref.topology(name) == "linear"
            for start, end in _intervals(length):
                assert ref.fetch(name, start, end) == truth.fetch(name, start, end), (source, start, end)
            assert ref.fetch(name, length - 10, length + 50) == truth.fetch(name, length - 10, length)
            assert ref.fetch(name) == truth.fetch(name)
            with pytest.raises(GenossmError, match="unknown contig 'chrZ'"):
                ref.fetch("chrZ", 0, 10)
            with pytest.raises(GenossmError, match="bad interval"):
                ref.fetch(name, -1, 10)
            with pytest.raises(GenossmError, match="bad interval"):
                ref.fetch(name, 10, 5)


def test_reference_case_and_topology_every_backend(tmp_path):
    import pysam

    text = ">lin first contig\nACGTacgtNN\nAC\n>circ plasmid [topology=circular]\nggccAATT\n"
    plain = tmp_path / "x.fa"
    plain.write_text(text)
    indexed = tmp_path / "y.fa"
    indexed.write_text(text)
    pysam.faidx(str(indexed))
    bgz = tmp_path / "z.fa.gz"
    pysam.tabix_compress(str(plain), str(bgz))
    pysam.faidx(str(bgz))
    store = tmp_path / "store"
    create_store(store, [("lin", "ACGTacgtNNAC"), ("circ", "ggccAATT")], topology={"circ": "circular"})
    for source, backend in ((plain, "Memory"), (indexed, "Faidx"), (bgz, "Faidx"), (store, "Store")):
        with open_reference(source) as ref:
            assert type(ref).__name__ == f"_{backend}Reference"
            assert ref.names == ["lin", "circ"]
            assert [ref.topology(n) for n in ref.names] == ["linear", "circular"], source
            assert ref.fetch("lin", 2, 12) == "GTacgtNNAC"
            assert ref.fetch("circ", 0, 8) == "ggccAATT"


def test_index_older_than_the_fasta_is_refused(tmp_path):
    import os

    import pysam

    path = tmp_path / "ref.fa"
    path.write_text(">a\nAAAACCCCGGGGTTTT\n>b\nTTTTGGGG\n")
    pysam.faidx(str(path))
    assert open_reference(path).length("a") == 16
    path.write_text(">a\nAAAACCCCGGGGTTTT\nGTAC\n>b\nTTTTGGGG\n")  # edited after indexing
    fai = tmp_path / "ref.fa.fai"
    os.utime(fai, (fai.stat().st_atime, path.stat().st_mtime - 10))
    with pytest.raises(GenossmError, match=r"ref\.fa: index ref\.fa\.fai is older than the FASTA; rebuild it"):
        open_reference(path)


def test_open_reference_rejects_non_fasta(tmp_path, shared_data):
    with pytest.raises(GenossmError, match="not a FASTA file"):
        open_reference(shared_data / "human_brca1" / "brca1_HG00096.bam")
    with pytest.raises(GenossmError, match="not a genossm token store"):
        open_reference(tmp_path)
