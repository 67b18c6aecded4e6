"""The bundled demo data: make_demo.py regenerates exactly what is committed, and the files say
what data/README.md says (coordinates, labels, motifs, regions, reads)."""

import gzip
import re
import subprocess
import sys
from pathlib import Path

import pysam
import pytest

from genossm.io.bed import read_bed
from genossm.io.fasta import open_reference

DATA = Path(__file__).resolve().parents[1] / "data"
LENGTHS = {"chr1": 1_200_000, "plasmid1": 80_000}


@pytest.fixture(scope="module")
def genome():
    with pysam.FastaFile(str(DATA / "demo_genome.fa.gz")) as fa:
        return {name: fa.fetch(name) for name in fa.references}


@pytest.fixture(scope="module")
def motifs():
    rows = [line.split("\t") for line in (DATA / "demo_motifs.tsv").read_text().splitlines()[1:]]
    return {r[0]: r[1] for r in rows}


def revcomp(seq):
    return seq.translate(str.maketrans("ACGTacgt", "TGCAtgca"))[::-1]


def occurrences(seq, motif):
    """0-based starts of the motif on either strand (overlapping matches included)."""
    return sorted(m.start() for site in {motif, revcomp(motif)} for m in re.finditer(f"(?={site})", seq))


def sam_lines(path):
    with pysam.AlignmentFile(str(path)) as bam:
        return [read.to_string() for read in bam]


def test_make_demo_regenerates_the_committed_files(tmp_path):
    subprocess.run([sys.executable, str(DATA / "make_demo.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    # compare content, not compressed bytes (zlib versions may differ)
    for name in ("demo_genome.fa.gz", "demo_variants.vcf.gz"):
        assert gzip.decompress((tmp_path / name).read_bytes()) == gzip.decompress((DATA / name).read_bytes()), name
    for name in ("demo_regions.bed", "demo_motifs.tsv", "demo_genome.fa.gz.fai"):
        assert (tmp_path / name).read_text() == (DATA / name).read_text(), name
    assert sam_lines(tmp_path / "demo_reads.bam") == sam_lines(DATA / "demo_reads.bam")


def test_genome_contigs_topology_and_soft_mask(genome):
    assert {name: len(seq) for name, seq in genome.items()} == LENGTHS
    ref = open_reference(DATA / "demo_genome.fa.gz")
    assert [ref.topology(n) for n in ref.names] == ["linear", "circular"]
    assert genome["chr1"][600_000:601_000] == "N" * 1000  # the documented gap, 0-based half-open
    assert genome["chr1"][599_999] != "N" and genome["chr1"][601_000] != "N"
    assert any(c.islower() for c in genome["chr1"])  # soft-masked microsatellites
    assert 0.38 < sum(genome["chr1"].upper().count(b) for b in "GC") / 1_200_000 < 0.62


def test_motifs_are_planted_thousands_of_times(genome, motifs):
    assert len(motifs) == 8 and all(10 <= len(m) <= 16 for m in motifs.values())
    for motif in motifs.values():
        assert sum(len(occurrences(seq.upper(), motif)) for seq in genome.values()) >= 700
    # M1 spans the plasmid's origin: whole only when the sequence wraps around
    plasmid = genome["plasmid1"]
    assert motifs["M1"] in plasmid[-7:] + plasmid[:20]


def test_variants_match_the_genome_and_their_labels(genome, motifs):
    n, n_motif, kinds = 0, 0, set()
    with pysam.VariantFile(str(DATA / "demo_variants.vcf.gz")) as vcf:
        assert {c: vcf.header.contigs[c].length for c in vcf.header.contigs} == LENGTHS
        for rec in vcf:
            n += 1
            seq = genome[rec.chrom]
            # VCF POS is 1-based: REF starts at 0-based rec.start
            assert seq[rec.start:rec.stop].upper() == rec.ref
            assert len(rec.alts) == 1 and rec.alts[0] != rec.ref
            kinds.add(rec.info["VT"])
            # bases the variant changes: the SNV base, the deleted bases, or the junction of an insertion
            changed = (rec.start, rec.start + 1) if rec.info["VT"] == "SNV" else (rec.start + 1, rec.stop) \
                if rec.info["VT"] == "DEL" else (rec.start, rec.start + 2)
            if "MOTIF" in rec.info:
                n_motif += 1
                motif = motifs[rec.info["MOTIF_ID"]]
                # the circular plasmid wraps: pad it with its other end (offset 20)
                pad = 20 if rec.chrom == "plasmid1" else 0
                padded = seq[len(seq) - pad:] + seq + seq[:pad]
                lo = changed[0] + pad - len(motif)
                hits = [lo + s - pad for s in occurrences(padded[lo:changed[1] + pad + len(motif)].upper(), motif)]
                assert any(s <= changed[0] and changed[1] <= s + len(motif) for s in hits), (rec.chrom, rec.pos)
            else:
                lo, hi = max(0, changed[0] - 20), changed[1] + 20
                assert not any(occurrences(seq[lo:hi].upper(), m) for m in motifs.values()), (rec.chrom, rec.pos)
    assert (n, n_motif, kinds) == (363, 181, {"SNV", "INS", "DEL"})


def test_variants_cover_both_contig_ends():
    with pysam.VariantFile(str(DATA / "demo_variants.vcf.gz")) as vcf:
        positions = {(r.chrom, r.pos) for r in vcf}
    assert {("chr1", 1), ("chr1", 1_200_000), ("plasmid1", 3)} <= positions


def test_regions_are_clusters_and_backgrounds_on_both_strands(genome, motifs):
    regions = read_bed(DATA / "demo_regions.bed", lengths=LENGTHS)
    assert len(regions) == 52 and len({r.name for r in regions}) == 52
    assert {r.strand for r in regions} == {"+", "-"}
    for r in regions:
        seq = genome[r.chrom][r.start:r.end].upper()
        count = sum(len(occurrences(seq, m)) for m in motifs.values())
        if r.name.startswith("cluster_"):
            assert count >= 12, r
        else:
            assert r.name.startswith("background_") and count == 0, r


def test_reads_are_sorted_indexed_and_flagged():
    with pysam.AlignmentFile(str(DATA / "demo_reads.bam")) as bam:
        reads = list(bam)
        assert bam.check_index() and bam.header["HD"]["SO"] == "coordinate"
    assert len(reads) == 2000 and all(r.query_length == 100 for r in reads)
    assert 20 <= sum(r.is_duplicate for r in reads) <= 60
    assert sum(r.is_secondary for r in reads) > 0 and sum(r.is_qcfail for r in reads) > 0
    assert 50 <= sum(r.mapping_quality < 20 for r in reads) <= 150
