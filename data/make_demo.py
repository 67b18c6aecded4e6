"""Generate the bundled demo data set: a synthetic genome with learnable structure, labelled
variants, regions and reads. Deterministic (seeded numpy): rerunning writes the same files.

    python data/make_demo.py [--out data]

What makes it learnable: the background is an order-3 Markov chain (a little predictable), and
eight motifs of 10-16 bp (drawn from the same chain) are planted thousands of times in both
orientations (very predictable once seen), densely in "cluster" regions and not at all in
"background" regions. Disrupting a motif base should cost a model that learned the motifs
likelihood; a neutral variant should not. data/README.md
describes every file and its coordinates.
"""

import argparse
import re
from pathlib import Path

import numpy as np

SEED = 20_240_611
BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
COMP = bytes.maketrans(b"ACGTacgtN", b"TGCAtgcaN")

# (name, length, topology)
CONTIGS = (("chr1", 1_200_000, "linear"), ("plasmid1", 80_000, "circular"))
MARKOV_ORDER = 3
N_MOTIFS = 8
MOTIF_LENGTHS = (10, 16)  # inclusive range
SCATTERED_COPIES = 6_000  # planted uniformly outside clusters and deserts
CLUSTERS = {"chr1": 24, "plasmid1": 4}  # motif-dense regions (BED "cluster_*")
DESERTS = {"chr1": 20, "plasmid1": 4}  # motif-free regions (BED "background_*")
REGION_LENGTH = 500
COPIES_PER_CLUSTER = 16
REPEATS = 30  # soft-masked (lowercase) microsatellites on chr1
GAP = ("chr1", 600_000, 1_000)  # an assembly gap of N: (contig, start, length)
NEUTRAL_DISTANCE = 25  # neutral variants lie at least this far from motifs, repeats and gaps
VARIANTS = {"motif_snv": 150, "motif_indel": 30, "neutral_snv": 150, "neutral_indel": 30}
READS, READ_LENGTH = 2_000, 100


def markov_chain(rng):
    """Order-3 transition table: (64, 3) cumulative P(A), P(A or C), P(A, C or G) given the
    previous three bases (context = their base-4 number)."""
    return np.cumsum(rng.dirichlet(np.full(4, 1.5), size=4**MARKOV_ORDER), axis=1)[:, :3].tolist()


def markov_sample(rng, chain, length, context=0):
    """(length,) uint8 ASCII bases drawn from the chain, continuing from ``context``."""
    out = bytearray(length)
    for i, u in enumerate(rng.random(length).tolist()):  # sequential by nature: plain Python
        row, b = chain[context], 0
        while b < 3 and u > row[b]:
            b += 1
        out[i] = b
        context = (context * 4 + b) % len(chain)
    return BASES[np.frombuffer(out, dtype=np.uint8)]


def make_motifs(rng, chain):
    """Motifs drawn from the background chain itself: a model that knows only the background
    rates a motif base like any other base, so only learning the motifs separates motif-hitting
    from neutral variants."""
    motifs = []
    while len(motifs) < N_MOTIFS:
        length = int(rng.integers(MOTIF_LENGTHS[0], MOTIF_LENGTHS[1] + 1))
        m = markov_sample(rng, chain, length, context=int(rng.integers(len(chain))))
        # reject low-complexity motifs (a base making up over half of it)
        if np.bincount(m, minlength=256)[BASES].max() <= len(m) // 2:
            motifs.append(m.tobytes())
    return motifs


def revcomp(seq: bytes) -> bytes:
    return seq.translate(COMP)[::-1]


class Contig:
    """One synthetic contig: its bases plus what was planted where (0-based half-open)."""

    def __init__(self, name, length, topology, rng, chain):
        self.name, self.length, self.topology = name, length, topology
        self.seq = markov_sample(rng, chain, length)  # (L,) ASCII uint8
        self.occupied = np.zeros(length, dtype=bool)  # motif, repeat or gap
        self.motif_mask = np.zeros(length, dtype=bool)
        self.motifs = []  # (start, end, motif index, strand); end may exceed length (wraps)
        self.clusters, self.deserts = [], []  # (start, end, strand)

    def free(self, start, end):
        idx = np.arange(start, end) % self.length
        return not self.occupied[idx].any()

    def plant(self, start, motif_index, motif, strand):
        site = motif if strand == "+" else revcomp(motif)
        idx = np.arange(start, start + len(site)) % self.length  # wraps on the circular contig
        self.seq[idx] = np.frombuffer(site, dtype=np.uint8)
        self.occupied[idx] = True
        self.motif_mask[idx] = True
        self.motifs.append((start, start + len(site), motif_index, strand))


def pick_regions(rng, contig, count, taken):
    """Non-overlapping REGION_LENGTH windows away from contig ends and from `taken` windows."""
    regions = []
    while len(regions) < count:
        start = int(rng.integers(1_000, contig.length - REGION_LENGTH - 1_000))
        end = start + REGION_LENGTH
        if contig.free(start, end) and all(end + 500 < s or start > e + 500 for s, e, _ in taken):
            region = (start, end, "+" if rng.random() < 0.5 else "-")
            regions.append(region)
            taken.append(region)
    return regions


def build_genome(rng, chain, motifs):
    contigs = [Contig(name, length, topo, rng, chain) for name, length, topo in CONTIGS]
    by_name = {c.name: c for c in contigs}

    gap_contig, gap_start, gap_len = GAP
    c = by_name[gap_contig]
    c.seq[gap_start : gap_start + gap_len] = ord("N")
    c.occupied[gap_start : gap_start + gap_len] = True

    c = by_name["chr1"]
    for _ in range(REPEATS):  # lowercase microsatellites, as RepeatMasker soft-masks them
        unit = BASES[rng.integers(0, 4, rng.integers(1, 4))].tobytes().lower()
        length = int(rng.integers(60, 300))
        start = int(rng.integers(2_000, c.length - 2_000))
        if c.free(start, start + length):
            c.seq[start : start + length] = np.frombuffer((unit * length)[:length], dtype=np.uint8)
            c.occupied[start : start + length] = True

    # A motif spanning the origin of the circular plasmid: scoring must wrap to see it whole.
    p = by_name["plasmid1"]
    p.plant(p.length - 7, 0, motifs[0], "+")

    for c in contigs:
        taken = []
        c.clusters = pick_regions(rng, c, CLUSTERS[c.name], taken)
        c.deserts = pick_regions(rng, c, DESERTS[c.name], taken)
        for start, end, strand in c.clusters:
            favourite = rng.choice(N_MOTIFS, 3, replace=False)  # each cluster has its own grammar
            planted, tries = 0, 0
            while planted < COPIES_PER_CLUSTER and tries < 5_000:
                tries += 1
                k = int(rng.choice(favourite))
                s = int(rng.integers(start, end - len(motifs[k])))
                if c.free(s, s + len(motifs[k])):
                    c.plant(s, k, motifs[k], strand)
                    planted += 1
        for start, end, _ in c.deserts:  # reserve: nothing else is planted there
            c.occupied[start:end] = True

    weights = np.array([c.length for c in contigs], dtype=float)
    planted = 0
    while planted < SCATTERED_COPIES:
        c = contigs[rng.choice(len(contigs), p=weights / weights.sum())]
        k = int(rng.integers(N_MOTIFS))
        s = int(rng.integers(100, c.length - 100 - len(motifs[k])))
        if c.free(s, s + len(motifs[k])):
            c.plant(s, k, motifs[k], "+" if rng.random() < 0.5 else "-")
            planted += 1
    for c in contigs:  # deserts were reserved only to keep motifs out
        for start, end, _ in c.deserts:
            c.occupied[start:end] = c.motif_mask[start:end]
        # motifs that the background or two neighbouring sites formed by chance count as motifs too
        text = c.seq.tobytes().upper()
        for site in {m for motif in motifs for m in (motif, revcomp(motif))}:
            for hit in re.finditer(b"(?=" + site + b")", text):
                c.occupied[hit.start() : hit.start() + len(site)] = True
                c.motif_mask[hit.start() : hit.start() + len(site)] = True
    return contigs


def near(mask, distance, circular):
    """True where a True of `mask` lies within `distance` bases."""
    padded = np.concatenate([mask[-distance:], mask, mask[:distance]]) if circular else np.pad(mask, distance)
    csum = np.concatenate([[0], np.cumsum(padded)])
    width = 2 * distance + 1
    return (csum[width:] - csum[:-width]) > 0


def other_base(rng, ref) -> str:
    """A random base other than ``ref`` (an ASCII code)."""
    return chr(int(rng.choice([b for b in BASES if b != ref])))


def random_bases(rng, n) -> str:
    return BASES[rng.integers(0, 4, n)].tobytes().decode()


def make_variants(rng, contigs):
    """Labelled variants as (contig, pos0, REF, ALT, motif id or None, type); pos0 is 0-based.

    Indels follow VCF: POS is the base before the inserted/deleted bases (the anchor)."""
    variants = []
    used = {c.name: np.zeros(c.length, dtype=bool) for c in contigs}  # keeps variants 30 bp apart
    # neutral sites: far from every motif, repeat and gap
    blocked = {c.name: near(c.occupied, NEUTRAL_DISTANCE, c.topology == "circular") for c in contigs}

    def ref(c, start, end):
        return c.seq[start:end].tobytes().decode().upper()

    def take(c, pos0, ref_allele, alt, motif, vtype):
        used[c.name][max(0, pos0 - 30) : pos0 + 30] = True
        variants.append((c.name, pos0, ref_allele, alt, motif, vtype))

    def snv(c, pos0, motif):
        take(c, pos0, ref(c, pos0, pos0 + 1), other_base(rng, c.seq[pos0]), motif, "SNV")

    def deletion(c, anchor, size, motif):
        take(c, anchor, ref(c, anchor, anchor + 1 + size), ref(c, anchor, anchor + 1), motif, "DEL")

    def insertion(c, anchor, motif):
        r = ref(c, anchor, anchor + 1)
        take(c, anchor, r, r + random_bases(rng, int(rng.integers(1, 4))), motif, "INS")

    # the origin-spanning plasmid motif: an SNV at 1-based POS 3 (its 10th base)
    snv(next(c for c in contigs if c.name == "plasmid1"), 2, "M1")
    # first and last base of each contig, where they are neutral
    for c in contigs:
        for pos0 in (0, c.length - 1):
            if not (blocked[c.name][pos0] or used[c.name][pos0]):
                snv(c, pos0, None)

    weights = np.array([len(c.motifs) for c in contigs], dtype=float)
    for kind in ("motif_snv", "motif_indel"):
        n = 0
        while n < VARIANTS[kind]:
            c = contigs[rng.choice(len(contigs), p=weights / weights.sum())]
            start, end, k, _ = c.motifs[rng.integers(len(c.motifs))]
            if end > c.length or used[c.name][start - 1 : end].any():
                continue
            motif = f"M{k + 1}"
            if kind == "motif_snv":
                snv(c, int(rng.integers(start, end)), motif)
            elif rng.random() < 0.5:  # delete 1-3 motif bases
                size = int(rng.integers(1, 4))
                deletion(c, int(rng.integers(start, end - size + 1)) - 1, size, motif)
            else:  # insert 1-3 bases between two motif bases
                insertion(c, int(rng.integers(start, end - 1)), motif)
            n += 1

    weights = np.array([c.length for c in contigs], dtype=float)
    for kind in ("neutral_snv", "neutral_indel"):
        n = 0
        while n < VARIANTS[kind]:
            c = contigs[rng.choice(len(contigs), p=weights / weights.sum())]
            pos0 = int(rng.integers(5, c.length - 5))
            if blocked[c.name][pos0 - 4 : pos0 + 5].any() or used[c.name][pos0]:
                continue
            if kind == "neutral_snv":
                snv(c, pos0, None)
            elif rng.random() < 0.5:
                deletion(c, pos0, int(rng.integers(1, 4)), None)
            else:
                insertion(c, pos0, None)
            n += 1

    order = {c.name: i for i, c in enumerate(contigs)}
    variants.sort(key=lambda v: (order[v[0]], v[1]))
    return variants


def write_fasta(path, contigs):
    """bgzip FASTA (60 columns) with .fai and .gzi, so pysam/samtools read it directly."""
    import pysam

    plain = path.with_suffix("")  # demo_genome.fa
    with open(plain, "wb") as fh:
        for c in contigs:
            header = f">{c.name}" + (" topology=circular" if c.topology == "circular" else "")
            fh.write(header.encode() + b"\n")
            for i in range(0, c.length, 60):
                fh.write(c.seq[i : i + 60].tobytes() + b"\n")
    pysam.tabix_compress(str(plain), str(path), force=True)
    plain.unlink()
    pysam.faidx(str(path))


def write_vcf(path, contigs, variants):
    """bgzip VCF 4.2 + tabix index. Labels: INFO flag MOTIF, MOTIF_ID, VT (SNV/INS/DEL)."""
    import pysam

    plain = path.with_suffix("")  # demo_variants.vcf
    lines = [
        "##fileformat=VCFv4.2",
        "##source=genossm data/make_demo.py",
        "##reference=demo_genome.fa.gz",
        *(f"##contig=<ID={c.name},length={c.length}>" for c in contigs),
        "##INFO=<ID=MOTIF,Number=0,Type=Flag,"
        'Description="Variant changes a planted motif (label: expected to matter)">',
        '##INFO=<ID=MOTIF_ID,Number=1,Type=String,Description="Which planted motif (M1..M8) the variant changes">',
        '##INFO=<ID=VT,Number=1,Type=String,Description="Variant type: SNV, INS or DEL">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    for i, (chrom, pos0, ref, alt, motif, vtype) in enumerate(variants, 1):
        info = f"MOTIF;MOTIF_ID={motif};VT={vtype}" if motif else f"VT={vtype}"
        lines.append(f"{chrom}\t{pos0 + 1}\tdemo{i:04d}\t{ref}\t{alt}\t.\tPASS\t{info}")
    plain.write_text("\n".join(lines) + "\n")
    pysam.tabix_index(str(plain), preset="vcf", force=True)  # writes path (bgzip) + .tbi


def write_bed(path, contigs):
    """BED6 of cluster (motif-dense) and background (motif-free) regions, 0-based half-open."""
    rows = []
    for c in contigs:
        rows += [(c.name, s, e, "cluster", strand) for s, e, strand in c.clusters]
        rows += [(c.name, s, e, "background", strand) for s, e, strand in c.deserts]
    order = {c.name: i for i, c in enumerate(contigs)}
    rows.sort(key=lambda r: (order[r[0]], r[1]))
    counts = {}
    with open(path, "w") as fh:
        for chrom, start, end, kind, strand in rows:
            counts[kind] = counts.get(kind, 0) + 1
            fh.write(f"{chrom}\t{start}\t{end}\t{kind}_{counts[kind]:02d}\t0\t{strand}\n")


def write_motifs(path, contigs, motifs):
    """TSV of the motifs and the count of planted copies of each."""
    counts = np.zeros(N_MOTIFS, dtype=int)
    for c in contigs:
        for _, _, k, _ in c.motifs:
            counts[k] += 1
    with open(path, "w") as fh:
        fh.write("motif_id\tsequence\tlength\tcopies\n")
        for k, m in enumerate(motifs):
            fh.write(f"M{k + 1}\t{m.decode()}\t{len(m)}\t{counts[k]}\n")


def write_reads(path, rng, contigs):
    """Coordinate-sorted, indexed BAM of simulated 100 bp single-end reads (0.5% substitutions),
    with some duplicate, secondary, QC-fail and low-MAPQ reads so read filters have work to do."""
    import pysam

    header = {
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": c.name, "LN": c.length} for c in contigs],
        "RG": [{"ID": "demo", "SM": "demo", "PL": "ILLUMINA"}],
    }
    weights = np.array([c.length for c in contigs], dtype=float)
    reads = []
    for i in range(READS):
        t = int(rng.choice(len(contigs), p=weights / weights.sum()))
        c = contigs[t]
        start = int(rng.integers(0, c.length - READ_LENGTH))
        seq = bytearray(c.seq[start : start + READ_LENGTH].tobytes().upper())
        for j in np.flatnonzero(rng.random(READ_LENGTH) < 0.005):
            seq[j] = ord(other_base(rng, seq[j]))
        quals = rng.integers(25, 41, READ_LENGTH)
        quals[-int(rng.integers(1, 15)) :] = rng.integers(2, 15)  # poor tails
        flag = 16 if rng.random() < 0.5 else 0
        u = rng.random()
        flag |= 0x400 if u < 0.02 else 0x100 if u < 0.03 else 0x200 if u < 0.04 else 0
        mapq = int(rng.integers(0, 10)) if rng.random() < 0.05 else 60
        reads.append((t, start, f"read{i:05d}", seq.decode(), quals, flag, mapq))
    reads.sort(key=lambda r: (r[0], r[1], r[2]))
    with pysam.AlignmentFile(str(path), "wb", header=header) as bam:
        for t, start, name, seq, quals, flag, mapq in reads:
            a = pysam.AlignedSegment(bam.header)
            a.query_name, a.query_sequence, a.flag = name, seq, flag
            a.reference_id, a.reference_start, a.mapping_quality = t, start, mapq
            a.cigarstring = f"{READ_LENGTH}M"
            a.query_qualities = pysam.qualitystring_to_array("".join(chr(q + 33) for q in quals))
            a.set_tag("RG", "demo")
            bam.write(a)
    pysam.index(str(path))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="output directory (default: data/)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(SEED)
    chain = markov_chain(rng)
    motifs = make_motifs(rng, chain)
    contigs = build_genome(rng, chain, motifs)
    variants = make_variants(rng, contigs)

    write_fasta(args.out / "demo_genome.fa.gz", contigs)
    write_vcf(args.out / "demo_variants.vcf.gz", contigs, variants)
    write_bed(args.out / "demo_regions.bed", contigs)
    write_motifs(args.out / "demo_motifs.tsv", contigs, motifs)
    write_reads(args.out / "demo_reads.bam", rng, contigs)
    n_motif = sum(v[4] is not None for v in variants)
    print(
        f"wrote {args.out}: {len(contigs)} contigs ({sum(c.length for c in contigs):,} bp), "
        f"{sum(len(c.motifs) for c in contigs):,} motif copies, {len(variants)} variants "
        f"({n_motif} hit a motif), {READS} reads"
    )


if __name__ == "__main__":
    main()
