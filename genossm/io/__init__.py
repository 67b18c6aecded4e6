"""Genomic file readers: FASTA (streaming and random access), GenBank, BAM/CRAM/SAM reads, BED.
pysam and Biopython are imported inside the functions that need them."""
