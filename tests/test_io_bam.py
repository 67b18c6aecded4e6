"""Reads from BAM/CRAM/uBAM into a read store, checked against an independent pysam walk."""

import pytest

from genossm.errors import GenossmError
from genossm.store import build_store
from genossm.tokenize import decode

pysam = pytest.importorskip("pysam")

_RC = str.maketrans("ACGTN", "TGCAN")
SAMPLES = ("HG00096", "HG00099", "HG00101")


@pytest.fixture
def brca1(shared_data):
    return shared_data / "human_brca1"


def expected_reads(path, min_mapq=0, secondary=False, supplementary=False, duplicates=False, qcfail=False,
                   unmapped=True, region=None, min_base_quality=0, orientation="original", reference=None):
    """(name, sequence) of the reads a store should hold, from pysam's own accessors."""
    reads = []
    with pysam.AlignmentFile(str(path), reference_filename=reference, check_sq=False) as bam:
        for r in bam.fetch(until_eof=True):
            if ((r.is_secondary and not secondary) or (r.is_supplementary and not supplementary)
                    or (r.is_duplicate and not duplicates) or (r.is_qcfail and not qcfail)
                    or (r.is_unmapped and not unmapped) or r.mapping_quality < min_mapq or not r.query_sequence):
                continue
            if region is not None:
                chrom, start, end = region
                r_end = r.reference_end if r.reference_end is not None else r.reference_start + 1
                if r.reference_name != chrom or r.reference_start >= end or r_end <= start:
                    continue
            seq = r.query_sequence
            if min_base_quality:
                seq = "".join(b if q >= min_base_quality else "N" for b, q in zip(seq, r.query_qualities))
            if orientation == "original" and r.is_reverse:
                seq = seq.translate(_RC)[::-1]
            name = r.query_name
            if r.is_paired:
                name += "/1" if r.is_read1 else "/2"
            if r.is_secondary or r.is_supplementary:
                kind = "secondary" if r.is_secondary else "supplementary"
                name += f"@{kind}:{r.reference_name}:{r.reference_start + 1}"
            reads.append((name, seq))
    return reads


def store_reads(store):
    assert store.is_reads
    return [(name, decode(store.window(name, 0, store.length(name))[0])) for name in store.names]


@pytest.mark.parametrize("sample", SAMPLES)
def test_default_filters_match_pysam(tmp_path, brca1, sample):
    bam = brca1 / f"brca1_{sample}.bam"
    store = build_store([bam], tmp_path / "s", progress=False)
    expected = expected_reads(bam)
    assert len(store) == len(expected) == store.manifest["reads"]["stats"]["kept"]
    assert store_reads(store) == expected
    stats = store.manifest["reads"]["stats"]
    with pysam.AlignmentFile(str(bam)) as handle:
        total = sum(1 for _ in handle.fetch(until_eof=True))
    assert stats["records"] == total == stats["kept"] + sum(stats["dropped"].values())
    assert all(name.endswith(("/1", "/2")) for name in store.names)  # paired: mates named apart
    assert len(set(store.names)) == len(store)


@pytest.mark.parametrize("options, expected_options", [
    ({"min_mapq": 20}, {"min_mapq": 20}),
    ({"include_duplicates": True}, {"duplicates": True}),
    ({"include_unmapped": False}, {"unmapped": False}),
    ({"min_base_quality": 30}, {"min_base_quality": 30}),
    ({"orientation": "reference"}, {"orientation": "reference"}),
    ({"regions": ["ref_brca1:20001-30000"]}, {"region": ("ref_brca1", 20000, 30000)}),
])
def test_each_filter_matches_pysam(tmp_path, brca1, options, expected_options):
    bam = brca1 / "brca1_HG00099.bam"
    store = build_store([bam], tmp_path / "s", progress=False, **options)
    expected = expected_reads(bam, **expected_options)
    assert len(store) == len(expected)
    assert store_reads(store) == expected


def test_overlapping_regions_return_each_read_once(tmp_path, brca1):
    bam = brca1 / "brca1_HG00101.bam"
    bed = tmp_path / "r.bed"
    bed.write_text("ref_brca1\t30000\t31000\nref_brca1\t20000\t30500\nref_brca1\t40000\t40001\n")
    store = build_store([bam], tmp_path / "s", regions_bed=bed, regions=["ref_brca1:40002-40100"], progress=False)
    expected = [read for span in ((20000, 31000), (40000, 40100))
                for read in expected_reads(bam, region=("ref_brca1",) + span)]
    assert len(set(expected)) == len(expected)  # the two spans share no read in this sample
    assert sorted(store_reads(store)) == sorted(expected)


def _flagged_bam(tmp_path, brca1):
    """BRCA1 reads with secondary, supplementary and QC-fail flags and missing SEQ set on some."""
    path = tmp_path / "flags.bam"
    with pysam.AlignmentFile(str(brca1 / "brca1_HG00099.bam")) as src, \
            pysam.AlignmentFile(str(path), "wb", template=src) as out:
        for i, read in enumerate(src.fetch(until_eof=True)):
            if i % 17 == 0:
                read.flag |= 0x100
            elif i % 23 == 0:
                read.flag |= 0x800
            elif i % 29 == 0:
                read.flag |= 0x200
            elif i % 31 == 0:
                read.query_sequence = None
            out.write(read)
    pysam.index(str(path))
    return path


def test_secondary_supplementary_qcfail_filters(tmp_path, brca1):
    bam = _flagged_bam(tmp_path, brca1)
    default = build_store([bam], tmp_path / "d", progress=False)
    assert store_reads(default) == expected_reads(bam)
    dropped = default.manifest["reads"]["stats"]["dropped"]
    assert dropped["secondary"] > 0 and dropped["supplementary"] > 0 and dropped["qcfail"] > 0
    assert dropped["no_sequence"] > 0
    everything = build_store([bam], tmp_path / "a", include_secondary=True, include_supplementary=True,
                             include_qcfail=True, include_duplicates=True, progress=False)
    expected = expected_reads(bam, secondary=True, supplementary=True, qcfail=True, duplicates=True)
    assert store_reads(everything) == expected
    assert any("@secondary:ref_brca1:" in name for name in everything.names)
    assert any("@supplementary:ref_brca1:" in name for name in everything.names)
    assert len(set(everything.names)) == len(everything)


def test_cram_needs_reference_and_matches_bam(tmp_path, brca1):
    bam, reference = brca1 / "brca1_HG00096.bam", brca1 / "ref_brca1.fa"
    cram = tmp_path / "x.cram"
    with pysam.AlignmentFile(str(bam)) as src, \
            pysam.AlignmentFile(str(cram), "wc", template=src, reference_filename=str(reference)) as out:
        for read in src.fetch(until_eof=True):
            out.write(read)
    with pytest.raises(GenossmError, match="CRAM input needs --reference"):
        build_store([cram], tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()
    from_cram = build_store([cram], tmp_path / "c", reference=reference, progress=False)
    assert from_cram.manifest["sources"][0]["format"] == "cram"
    assert store_reads(from_cram) == store_reads(build_store([bam], tmp_path / "b", progress=False))


def test_unaligned_bam(tmp_path, brca1):
    header = {"HD": {"VN": "1.6", "SO": "unknown"}}
    path = tmp_path / "u.bam"
    expected = []
    with pysam.AlignmentFile(str(brca1 / "brca1_HG00096.bam")) as src, \
            pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i, read in enumerate(src.fetch(until_eof=True)):
            if i == 300:
                break
            seq = read.get_forward_sequence()
            u = pysam.AlignedSegment(out.header)
            u.query_name, u.query_sequence = read.query_name, seq
            u.query_qualities = pysam.qualitystring_to_array("I" * len(seq))
            u.flag = 0x4 | 0x8 | 0x1 | (0x40 if read.is_read1 else 0x80)
            out.write(u)
            expected.append((read.query_name + ("/1" if read.is_read1 else "/2"), seq))
    store = build_store([path], tmp_path / "s", progress=False)
    assert store_reads(store) == expected
    assert store.manifest["sources"][0]["format"] == "bam"


def test_read_windows_pad_past_both_ends(tmp_path, brca1):
    store = build_store([brca1 / "brca1_HG00096.bam"], tmp_path / "s", progress=False)
    name = store.names[5]
    length = store.length(name)
    full = decode(store.window(name, 0, length)[0])
    assert decode(store.window(name, -3, length + 2)[0]) == "---" + full + "--"
    assert store.topology(name) == "linear"


def test_region_without_index_and_unknown_contig(tmp_path, brca1):
    bam = tmp_path / "noindex.bam"
    bam.write_bytes((brca1 / "brca1_HG00096.bam").read_bytes())
    with pytest.raises(GenossmError, match=r"noindex\.bam: region query needs an index"):
        build_store([bam], tmp_path / "s", regions=["ref_brca1:1-100"], progress=False)
    with pytest.raises(GenossmError, match=r"noindex\.bam: region 'chrZ:1-5': unknown contig 'chrZ'"):
        build_store([bam], tmp_path / "s", regions=["chrZ:1-5"], progress=False)
    assert not (tmp_path / "s").exists()


def test_read_options_do_not_apply_to_genomes(tmp_path, brca1):
    with pytest.raises(GenossmError, match="read filters and regions apply only to BAM"):
        build_store([brca1 / "ref_brca1.fa"], tmp_path / "s", min_mapq=10, progress=False)
    with pytest.raises(GenossmError, match="cannot mix genome"):
        build_store([brca1 / "ref_brca1.fa", brca1 / "brca1_HG00096.bam"], tmp_path / "s", progress=False)
    with pytest.raises(GenossmError, match="held-out regions apply to genome stores"):
        build_store([brca1 / "brca1_HG00096.bam"], tmp_path / "s", holdout_fraction=0.1, progress=False)
