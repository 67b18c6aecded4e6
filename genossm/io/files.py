"""File-level helpers shared by the readers: open with a clear error, sniff the format, stream
decompressed blocks (plain, gzip or bgzip) while hashing the raw bytes, and prefetch blocks on a
background thread so decompression (which releases the GIL) overlaps parsing on a second core.
"""

import hashlib
import queue
import threading
import zlib
from pathlib import Path

from genossm.errors import GenossmError

try:  # ISA-L inflates gzip ~2x faster than zlib, with zlib's API
    from isal import isal_zlib as inflate_lib
except ImportError:
    inflate_lib = zlib

GZIP_MAGIC = b"\x1f\x8b"
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")  # bgzip's last block
FORMATS = ("fasta", "genbank", "bam", "cram", "sam")
GENOME_FORMATS = ("fasta", "genbank")

_RAW_BLOCK = 1 << 17  # compressed bytes per read (~400 kB of FASTA): small blocks pipeline well
_PLAIN_BLOCK = 1 << 20  # ~1 MB blocks keep the per-block arrays in cache-friendly, reused memory
_MAX_OUT = 1 << 24  # cap on decompressed bytes per step (a block of N's compresses ~1000x)
_EXTENSIONS = {
    ".fa": "fasta", ".fasta": "fasta", ".fna": "fasta", ".fas": "fasta", ".ffn": "fasta",
    ".gb": "genbank", ".gbk": "genbank", ".gbff": "genbank", ".genbank": "genbank",
    ".bam": "bam", ".ubam": "bam", ".cram": "cram", ".sam": "sam",
}


def open_input(path):
    """Open ``path`` for binary reading, turning OS errors into a one-line GenossmError."""
    try:
        return open(path, "rb")
    except OSError as err:
        raise GenossmError(f"cannot read file: {err.strerror or err}", path=path) from None


def is_gzip(path) -> bool:
    with open_input(path) as handle:
        return handle.read(2) == GZIP_MAGIC


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open_input(path) as handle:
        while block := handle.read(_PLAIN_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def detect_format(path) -> str:
    """Tell FASTA, GenBank, BAM, CRAM and SAM apart by content, falling back on the extension."""
    with open_input(path) as handle:
        head = handle.read(1 << 16)
    if not head:
        raise GenossmError("empty file", path=path)
    if head.startswith(b"CRAM"):
        return "cram"
    if head.startswith(GZIP_MAGIC):
        try:
            head = zlib.decompressobj(31).decompress(head, 1 << 16)
        except zlib.error:
            raise GenossmError("corrupt gzip data at the start of the file", path=path) from None
        if not head:
            raise GenossmError("empty file (gzip with no content)", path=path)
    if head.startswith(b"BAM\x01"):
        return "bam"
    text = head.lstrip()
    if text.startswith(b">"):
        return "fasta"
    if text.startswith(b"LOCUS"):
        return "genbank"
    if text[:4] in (b"@HD\t", b"@SQ\t", b"@RG\t", b"@PG\t", b"@CO\t"):
        return "sam"
    name = Path(path).name.lower()
    for suffix in (".gz", ".bgz"):
        name = name.removesuffix(suffix)
    fmt = _EXTENSIONS.get(Path(name).suffix)
    if fmt is None:
        raise GenossmError(
            "cannot tell the format (not FASTA, GenBank, BAM, CRAM or SAM); give --format", path=path
        )
    return fmt


def is_bgzf_header(head: bytes) -> bool:
    """True for the first 18 bytes of a BGZF file: gzip with the FEXTRA 'BC' subfield (what
    bgzip and htslib write)."""
    return len(head) >= 18 and head[:2] == GZIP_MAGIC and bool(head[3] & 4) and head[12:14] == b"BC"


def iter_blocks(path, hasher=None, progress=None):
    """Yield the decompressed content of ``path`` in blocks of bytes.

    Gzip files may hold several members (bgzip writes one per 64 kB); each is decompressed in
    turn. ``hasher`` (hashlib object) sees the raw file bytes; ``progress`` (tqdm) is advanced by
    raw bytes read. A file that ends inside a gzip member raises "truncated gzip file", and so
    does a BGZF file (bgzip) that ends without its end-of-file block: one cut between blocks.
    """
    with open_input(path) as handle:
        head = handle.read(18)
        gzipped = head[:2] == GZIP_MAGIC
        bgzf = is_bgzf_header(head)
        handle.seek(0)
        inflater = inflate_lib.decompressobj(31) if gzipped else None
        member_open, tail = False, b""
        while raw := handle.read(_RAW_BLOCK if gzipped else _PLAIN_BLOCK):
            if bgzf:
                tail = (tail + raw[-len(BGZF_EOF):])[-len(BGZF_EOF):]
            if hasher is not None:
                hasher.update(raw)
            if progress is not None:
                progress.update(len(raw))
            if not gzipped:
                yield raw
                continue
            while raw:
                member_open = True
                try:
                    out = inflater.decompress(raw, _MAX_OUT)
                except inflate_lib.error as err:
                    raise GenossmError(f"corrupt gzip data ({err})", path=path) from None
                if out:
                    yield out
                if inflater.eof:
                    raw = inflater.unused_data
                    inflater = inflate_lib.decompressobj(31)
                    member_open = False
                else:
                    raw = inflater.unconsumed_tail
        if member_open:
            raise GenossmError("truncated gzip file (ends inside a compressed block)", path=path)
        if bgzf and tail != BGZF_EOF:
            raise GenossmError("truncated gzip file (bgzip file without its end-of-file block)", path=path)


def prefetch(iterator, depth: int = 4):
    """Run ``iterator`` on a background thread, ``depth`` items ahead; re-raise its errors here."""
    items = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as err:  # handed to the consumer, which re-raises it
            put((done, err))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name="genossm-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, err = items.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()
