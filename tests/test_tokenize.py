import numpy as np
import pytest
import torch

from genossm.errors import GenossmError
from genossm.tokenize import (
    A, C, COMPLEMENT, G, MASK, N, PAD, T, VOCAB, VOCAB_SIZE, decode, encode, encode_with_softmask, reverse_complement,
)


def test_vocabulary_constants():
    assert (A, C, G, T, N, MASK, PAD) == tuple(range(7))
    assert VOCAB_SIZE == len(VOCAB) == 7
    assert COMPLEMENT.tolist() == [T, G, C, A, N, MASK, PAD]
    assert (COMPLEMENT[COMPLEMENT] == np.arange(VOCAB_SIZE)).all()  # an involution


def test_encode_decode_round_trip_and_softmask():
    ids, soft = encode_with_softmask("ACGTNacgtn")
    assert ids.dtype == np.uint8 and soft.dtype == bool
    assert ids.tolist() == [A, C, G, T, N] * 2
    assert soft.tolist() == [False] * 5 + [True] * 5
    assert decode(ids) == "ACGTNACGTN"
    assert decode([MASK, PAD]) == "?-"
    ids[0] = MASK  # callers may edit the ids in place
    assert encode("").size == 0


def test_iupac_and_u():
    ambiguous = "RYSWKMBDHVryswkmbdhv"
    ids, soft = encode_with_softmask(ambiguous)
    assert (ids == N).all()
    assert soft.tolist() == [False] * 10 + [True] * 10
    assert encode("Uu").tolist() == [T, T]


def test_inputs_of_every_type_agree():
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("ACGTNacgtnRY"), 1000))
    expected = encode_with_softmask(text)
    for variant in (text.encode(), bytearray(text.encode()), memoryview(text.encode()),
                    np.frombuffer(text.encode(), dtype=np.uint8)):
        ids, soft = encode_with_softmask(variant)
        assert (ids == expected[0]).all() and (soft == expected[1]).all()


def test_every_byte_is_valid_or_an_error():
    valid = set("ACGTNUacgtnu" + "RYSWKMBDHVryswkmbdhv")
    for byte in range(256):
        char = bytes([byte])
        if chr(byte) in valid:
            assert encode(char).size == 1
        else:
            with pytest.raises(GenossmError):
                encode(char)


@pytest.mark.parametrize("text, skip, position, char", [
    ("ACGTX", False, 4, "X"),
    ("AC-GT", False, 2, "-"),
    ("ACGTé", False, 4, "é"),
    ("AC\nGT*", True, 4, "*"),
    (b"AC\r\n\nG.T", True, 3, "."),
])
def test_invalid_character_names_contig_and_position(text, skip, position, char):
    with pytest.raises(GenossmError) as err:
        encode_with_softmask(text, "chr7", offset=100, skip_whitespace=skip)
    assert str(err.value) == f"chr7: invalid character {char!r} at position {100 + position} (0-based)"


def test_skip_whitespace_drops_line_breaks_only_when_asked():
    ids, soft = encode_with_softmask(b"AC\r\nGt \tN\n", skip_whitespace=True)
    assert decode(ids) == "ACGTN" and soft.tolist() == [False, False, False, True, False]
    with pytest.raises(GenossmError):
        encode("AC\nGT")


def test_reverse_complement_numpy_and_torch():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, VOCAB_SIZE, size=(3, 17)).astype(np.uint8)
    rc = reverse_complement(ids)
    assert (rc[:, ::-1] == COMPLEMENT[ids]).all()
    assert (reverse_complement(rc) == ids).all()
    assert decode(reverse_complement(encode("AACGTN"))) == "NACGTT"
    tensor = torch.from_numpy(ids.astype(np.int64))
    assert torch.equal(reverse_complement(tensor), torch.from_numpy(rc.astype(np.int64)))
