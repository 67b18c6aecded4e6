"""Token store: writing, O(window) reads with padding/wrapping, manifest, held-out regions, atomicity."""

import gzip
import hashlib
import json
import pickle

import numpy as np
import pytest

from genossm import __version__
from genossm.errors import GenossmError
from genossm.store import TokenStore, build_store, create_store
from genossm.tokenize import PAD, decode, encode_with_softmask


def _random_seq(rng, n):
    return "".join(rng.choice(list("ACGTNacgtn"), n))


def _expected_window(seq, start, end, circular):
    """Reference implementation: (text with '-' for PAD, softmask) by per-position indexing."""
    ids, soft = encode_with_softmask(seq)
    positions = np.arange(start, end)
    if circular:
        positions = positions % len(seq)
    inside = (positions >= 0) & (positions < len(seq))
    out = np.full(end - start, PAD, dtype=np.uint8)
    mask = np.zeros(end - start, dtype=bool)
    out[inside] = ids[positions[inside]]
    mask[inside] = soft[positions[inside]]
    return decode(out), mask


def test_windows_linear_and_circular_match_reference(tmp_path):
    rng = np.random.default_rng(0)
    seqs = {"lin": _random_seq(rng, 1001), "circ": _random_seq(rng, 333), "upper": "ACGT" * 50}
    store = create_store(tmp_path / "s", seqs.items(), topology={"circ": "circular"})
    assert store.names == ["lin", "circ", "upper"]
    assert [store.topology(n) for n in store.names] == ["linear", "circular", "linear"]
    for name, seq in seqs.items():
        length = len(seq)
        assert store.length(name) == length
        circular = store.topology(name) == "circular"
        spans = [(0, length), (0, 1), (length - 1, length), (-5, 3), (length - 3, length + 9), (-7, length + 7),
                 (-2 * length, -length + 1), (length + 4, length + 10), (10, 10)]
        spans += [(int(s), int(s + w)) for s, w in zip(rng.integers(-length, 2 * length, 40), rng.integers(0, 3 * length, 40))]
        for start, end in spans:
            ids, soft = store.window(name, start, end)
            assert ids.dtype == np.uint8 and soft.dtype == bool and ids.shape == soft.shape == (end - start,)
            text, mask = _expected_window(seq, start, end, circular)
            assert decode(ids) == text, (name, start, end)
            assert (soft == mask).all(), (name, start, end)
    assert store.manifest["contigs"][2]["softmask"] is None  # no lowercase: no mask file


def test_window_errors(tmp_path):
    store = create_store(tmp_path / "s", [("a", "ACGT")])
    with pytest.raises(GenossmError, match="unknown sequence name 'b'"):
        store.window("b", 0, 1)
    with pytest.raises(GenossmError, match="window end 1 < start 2"):
        store.window("a", 2, 1)
    with pytest.raises(GenossmError, match="unknown sequence name"):
        store.length("b")
    assert "a" in store and "b" not in store and len(store) == 1


def test_manifest_and_heldout(tmp_path):
    store = create_store(tmp_path / "s", [("a", b"ACGTNNacgt"), ("b", "GGGG")],
                         heldout={"val": [("a", 6, 10)], "test": [("b", 0, 2)]})
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest == store.manifest
    assert manifest["format"] == "genossm-token-store" and manifest["kind"] == "genome"
    assert manifest["tool_version"] == __version__
    assert manifest["length"] == 14
    assert manifest["base_counts"] == {"A": 2, "C": 2, "G": 6, "T": 2, "N": 2}
    assert manifest["n_fraction"] == pytest.approx(2 / 14)
    a = manifest["contigs"][0]
    assert a["base_counts"] == {"A": 2, "C": 2, "G": 2, "T": 2, "N": 2} and a["softmasked"] == 4
    assert store.heldout("val") == [("a", 6, 10)] and store.heldout() == [("a", 6, 10)]
    assert store.heldout("test") == [("b", 0, 2)] and store.heldout("other") == []
    for bad in ({"val": [("zz", 0, 1)]}, {"val": [("a", 5, 11)]}, {"val": [("a", 3, 3)]}):
        with pytest.raises(GenossmError, match="held-out region"):
            create_store(tmp_path / "bad", [("a", "ACGTNNacgt")], heldout=bad)
    assert not (tmp_path / "bad").exists()


def test_bad_sequences_leave_no_store(tmp_path):
    with pytest.raises(GenossmError, match="'x': invalid character 'Z' at position 2"):
        create_store(tmp_path / "s", [("x", "ACZ")])
    with pytest.raises(GenossmError, match="duplicate sequence name 'x'"):
        create_store(tmp_path / "s", [("x", "AC"), ("x", "GT")])
    with pytest.raises(GenossmError, match="sequence is empty"):
        create_store(tmp_path / "s", [("x", "")])
    with pytest.raises(GenossmError, match="topology given for unknown contig 'y'"):
        create_store(tmp_path / "s", [("x", "AC")], topology={"y": "circular"})
    assert list(tmp_path.iterdir()) == []  # neither the store nor a temporary sibling


def test_existing_store_replaced_other_paths_refused(tmp_path):
    create_store(tmp_path / "s", [("x", "ACGT")])
    assert create_store(tmp_path / "s", [("y", "GG")]).names == ["y"]
    with pytest.raises(GenossmError):
        create_store(tmp_path / "s", [("z", "A!")])
    assert TokenStore.open(tmp_path / "s").names == ["y"]  # a failed rebuild keeps the old store
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "data.txt").write_text("keep me")
    with pytest.raises(GenossmError, match="exists and is not a genossm token store"):
        create_store(tmp_path / "precious", [("x", "A")])
    assert (tmp_path / "precious" / "data.txt").read_text() == "keep me"
    with pytest.raises(GenossmError, match="not a genossm token store"):
        TokenStore.open(tmp_path / "precious")


def test_pickles_by_path_for_worker_processes(tmp_path):
    store = create_store(tmp_path / "s", [("x", "ACGTacgt" * 1000)], topology={"x": "circular"})
    store.window("x", 0, 10)  # maps the contig
    payload = pickle.dumps(store)
    assert len(payload) < 4096  # the path and manifest, not the arrays
    clone = pickle.loads(payload)
    for a, b in zip(clone.window("x", -5, 20), store.window("x", -5, 20)):
        assert (a == b).all()


def test_token_arrays_are_plain_memory_mappable_npy(tmp_path):
    create_store(tmp_path / "s", [("x", "ACGTacgtNN" * 3)])
    tokens = np.load(tmp_path / "s" / "contigs" / "000000.tokens.npy", mmap_mode="r")
    packed = np.load(tmp_path / "s" / "contigs" / "000000.softmask.npy")
    assert tokens.dtype == np.uint8 and tokens.shape == (30,)
    assert decode(tokens) == "ACGTACGTNN" * 3
    assert (np.unpackbits(packed)[:30].astype(bool) == encode_with_softmask("ACGTacgtNN" * 3)[1]).all()


def test_ecoli_round_trip(tmp_path, shared_data):
    path = shared_data / "ecoli" / "GCF_000005845.2_ASM584v2_genomic.fna.gz"
    raw = gzip.decompress(path.read_bytes())
    header, _, body = raw.partition(b"\n")
    sequence = body.replace(b"\n", b"")
    store = build_store([path], tmp_path / "ecoli", topology="circular", holdout_fraction=0.1, progress=False)
    name = header[1:].split()[0].decode()
    assert store.names == [name] == ["NC_000913.3"]
    assert store.length(name) == len(sequence) == 4_641_652
    direct = {base: sequence.count(base.encode()) for base in "ACGTN"}
    assert store.manifest["base_counts"] == direct
    assert store.manifest["contigs"][0]["base_counts"] == direct
    assert store.topology(name) == "circular"
    assert store.heldout("val") == [(name, 4_641_652 - 464_165, 4_641_652)]
    source = store.manifest["sources"][0]
    assert source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert source["size"] == path.stat().st_size and source["format"] == "fasta"
    assert decode(store.window(name, 0, len(sequence))[0]).encode() == sequence
    wrapped = decode(store.window(name, -100, 100)[0]).encode()
    assert wrapped == sequence[-100:] + sequence[:100]


def test_brca1_windows_equal_pysam_fetch(tmp_path, shared_data):
    import pysam

    path = shared_data / "human_brca1" / "ref_brca1.fa"
    store = build_store([path], tmp_path / "s", progress=False)
    fasta = pysam.FastaFile(str(path))
    name, length = fasta.references[0], fasta.lengths[0]
    assert store.names == [name] and store.length(name) == length == 81_188
    assert store.topology(name) == "linear"
    rng = np.random.default_rng(0)
    spans = [(0, 1), (0, 5000), (length - 1, length), (length - 5000, length), (0, length)]
    spans += [(int(s), int(min(length, s + 20_000))) for s in rng.integers(0, length, 30)]
    for start, end in spans:
        ids, soft = store.window(name, start, end)
        text = fasta.fetch(name, start, end)
        assert decode(ids) == text.upper()
        assert (soft == np.array([c.islower() for c in text], dtype=bool)).all()
    ids, _ = store.window(name, length - 10, length + 10)  # past the end: PAD
    assert decode(ids) == fasta.fetch(name, length - 10, length).upper() + "-" * 10
    ids, _ = store.window(name, -10, 10)  # before the start: PAD
    assert decode(ids) == "-" * 10 + fasta.fetch(name, 0, 10).upper()


def test_multi_file_genome_and_holdout_bed(tmp_path, shared_data):
    inputs = [shared_data / "small" / "MT-human.fa", shared_data / "human_brca1" / "ref_brca1.fa"]
    bed = tmp_path / "h.bed"
    bed.write_text("ref_brca1\t100\t200\nref_brca1\t50\t50\n")
    store = build_store(inputs, tmp_path / "s", topology_by_name={"MT_human": "circular"}, holdout_bed=bed,
                        holdout_split="test", progress=False)
    assert store.names == ["MT_human", "ref_brca1"]
    assert [store.topology(n) for n in store.names] == ["circular", "linear"]
    assert [c["source"] for c in store.manifest["contigs"]] == [0, 1]
    assert [s["path"] for s in store.manifest["sources"]] == [str(p.resolve()) for p in inputs]
    assert store.heldout("test") == [("ref_brca1", 100, 200)] and store.heldout("val") == []
    bed.write_text("ref_brca1\t100\t90000\n")
    with pytest.raises(GenossmError, match=r"h\.bed: line 1: end 90000 is past the end of 'ref_brca1'"):
        build_store(inputs, tmp_path / "t", holdout_bed=bed, progress=False)
    with pytest.raises(GenossmError, match="topology given for unknown contig 'chrQ'"):
        build_store(inputs, tmp_path / "t", topology_by_name={"chrQ": "circular"}, progress=False)
    assert not (tmp_path / "t").exists()


def test_genbank_topology_from_locus(tmp_path):
    from Bio.Seq import Seq
    from Bio.SeqIO import write
    from Bio.SeqRecord import SeqRecord

    records = [
        SeqRecord(Seq("ACGTACGTAA"), id="pA.1", name="pA", description="plasmid",
                  annotations={"molecule_type": "DNA", "topology": "circular"}),
        SeqRecord(Seq("ggccnnTT"), id="chr.2", name="chr", description="chromosome",
                  annotations={"molecule_type": "DNA", "topology": "linear"}),
    ]
    path = tmp_path / "x.gbk"
    write(records, path, "genbank")
    store = build_store([path], tmp_path / "s", progress=False)
    assert store.names == ["pA.1", "chr.2"]
    assert [store.topology(n) for n in store.names] == ["circular", "linear"]
    assert decode(store.window("chr.2", 0, 8)[0]) == "GGCCNNTT"
    assert not store.window("chr.2", 0, 8)[1].any()  # GenBank ORIGIN is lowercase by convention: no soft-mask
    assert decode(store.window("pA.1", 8, 12)[0]) == "AAAC"  # wraps
    linear = build_store([path], tmp_path / "l", topology="linear", progress=False)
    assert [linear.topology(n) for n in linear.names] == ["linear", "linear"]


def test_softmask_starting_late_and_across_chunk_boundaries(tmp_path):
    from genossm.store.writer import GenomeWriter

    rng = np.random.default_rng(5)
    seq = "ACGT" * 2500 + _random_seq(rng, 5003)  # lowercase only after 10,000 bases
    writer = GenomeWriter(tmp_path)
    cuts = [0, 3, 9999, 10001, 10013, 12000, len(seq)]  # odd-sized chunks, first ones all uppercase
    writer.add("x", [seq[a:b] for a, b in zip(cuts, cuts[1:])])
    packed = np.load(tmp_path / writer.contigs[0]["softmask"])
    assert packed.size == (len(seq) + 7) // 8
    mask = np.unpackbits(packed)[: len(seq)].astype(bool)
    assert (mask == encode_with_softmask(seq)[1]).all()
    assert writer.contigs[0]["softmasked"] == int(mask.sum())


def test_damaged_store_is_one_error(tmp_path):
    store = create_store(tmp_path / "s", [("a", "ACgt"), ("b", "GGCC")])
    (tmp_path / "s" / store.manifest["contigs"][1]["tokens"]).unlink()
    (tmp_path / "s" / store.manifest["contigs"][0]["softmask"]).write_bytes(b"not npy")
    store = TokenStore.open(tmp_path / "s")
    with pytest.raises(GenossmError, match=r"damaged token store: cannot read contigs/000001.tokens.npy"):
        store.window("b", 0, 2)
    with pytest.raises(GenossmError, match=r"damaged token store: cannot read contigs/000000.softmask.npy"):
        store.window("a", 0, 2)
