"""The k-mer Markov baseline: counts on both strands, smoothing, order selection, and the masked-base
posterior, checked against a strand-symmetric order-2 chain whose entropy is known exactly."""

import itertools

import numpy as np
import pytest

from genossm.evaluate import markov
from genossm.evaluate.markov import KmerCounts, MarkovModel, composition_log2_probs, select_markov, \
    smoothed_log2_tables
from genossm.evaluate.recall_task import kmer_codes
from genossm.tokenize import N, PAD, encode, reverse_complement


def symmetric_order2_chain(seed: int, scale: float = 1.0):
    """An order-2 chain equal in law to its own reverse complement: the Markov field with a
    3-body potential phi(a, b, c) = phi(c', b', a') (x' the complement), made a chain through the
    Perron eigenvectors of its transfer matrix. Returns (T[a, b, c] = P(c | a b), pi[a, b])."""
    rng = np.random.default_rng(seed)
    phi = rng.normal(0, scale, (4, 4, 4))
    phi = (phi + phi[::-1, ::-1, ::-1].transpose(2, 1, 0)) / 2  # complement of base x is 3 - x
    transfer = np.zeros((16, 16))
    for a, b, c in itertools.product(range(4), repeat=3):
        transfer[4 * a + b, 4 * b + c] = np.exp(phi[a, b, c])
    values, right = np.linalg.eig(transfer)
    top = np.argmax(values.real)
    lam, r = values[top].real, np.abs(right[:, top].real)
    values, left = np.linalg.eig(transfer.T)
    l = np.abs(left[:, np.argmax(values.real)].real)
    chain = np.zeros((4, 4, 4))
    for a, b, c in itertools.product(range(4), repeat=3):
        chain[a, b, c] = transfer[4 * a + b, 4 * b + c] * r[4 * b + c] / (lam * r[4 * a + b])
    pi = l * r
    return chain, (pi / pi.sum()).reshape(4, 4)


def sample_chain(chain, pi, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(chain, -1).reshape(16, 4)
    draws = rng.random(length)
    state = int(rng.choice(16, p=pi.reshape(-1)))
    out = np.empty(length, dtype=np.uint8)
    out[0], out[1] = divmod(state, 4)
    for t in range(2, length):
        out[t] = np.searchsorted(cumulative[4 * out[t - 2] + out[t - 1]], draws[t], side="right")
    return out


def masked_entropy(chain, pi) -> float:
    """H(X_i | X_{i-2}, X_{i-1}, X_{i+1}, X_{i+2}) in bits, exactly, from the stationary 5-mer law."""
    entropy = 0.0
    for a, b, d, e in itertools.product(range(4), repeat=4):
        joint = np.array([pi[a, b] * chain[a, b, c] * chain[b, c, d] * chain[c, d, e] for c in range(4)])
        entropy -= float((joint * np.log2(joint / joint.sum())).sum())
    return entropy


@pytest.fixture(scope="module")
def order2():
    chain, pi = symmetric_order2_chain(0)
    return chain, pi, sample_chain(chain, pi, 500_000, 1)


def test_chain_is_strand_symmetric(order2):
    chain, pi, seq = order2
    forward = np.bincount(kmer_codes(seq, 3), minlength=64) / len(seq)
    reverse = np.bincount(kmer_codes(reverse_complement(seq), 3), minlength=64) / len(seq)
    assert np.abs(forward - reverse).max() < 0.01


def test_fitted_model_reaches_the_true_masked_entropy(order2):
    chain, pi, seq = order2
    counts = KmerCounts(5)
    counts.add(seq[:300_000])
    val = [(seq[300_000:350_000], np.arange(5, 50_000 - 5))]
    test = [(seq[350_000:], np.arange(5, 150_000 - 5))]
    order, beta, grid = select_markov(counts, val, (1.0, 16.0))
    assert order >= 2  # orders 0 and 1 cannot capture an order-2 chain
    by_order = {row["order"]: row["bits_per_base"] for row in grid if row["beta"] == beta}
    assert by_order[1] > by_order[2] + 0.05
    model = MarkovModel.fit(counts, order, beta)
    truth = masked_entropy(chain, pi)
    assert model.score(test).bits_per_base == pytest.approx(truth, abs=0.01)
    # the order-2 table itself is the chain
    fitted = np.exp2(MarkovModel.fit(counts, 2, beta).tables[2]).reshape(4, 4, 4)
    assert np.abs(fitted - chain).max() < 0.03


def test_counts_are_both_strands_and_skip_unknown_bases():
    ids = encode("ACGTTGCANNACGGA")
    counts = KmerCounts(2)
    counts.add(ids)
    both = np.concatenate([ids, [PAD], reverse_complement(ids)])  # PAD keeps k-mers from spanning the join
    for m in range(1, 4):
        codes = kmer_codes(np.where(both < 4, both, 0), m)
        windows = np.lib.stride_tricks.sliding_window_view(both, m)
        expected = np.bincount(codes[(windows < 4).all(1)], minlength=4**m)
        assert np.array_equal(counts.counts[m - 1], expected)
        kmers = np.array(list(np.ndindex(*(4,) * m)), dtype=np.int64)  # (4^m, m) in code order
        rc_codes = reverse_complement(kmers.astype(np.uint8)).astype(np.int64) @ 4 ** np.arange(m - 1, -1, -1)
        assert np.array_equal(counts.counts[m - 1], counts.counts[m - 1][rc_codes])  # strand-symmetric


def test_counting_in_chunks_matches_counting_at_once(monkeypatch):
    ids = np.random.default_rng(3).integers(0, 5, 10_000).astype(np.uint8)  # with Ns
    whole = KmerCounts(4)
    whole.add(ids)
    monkeypatch.setattr(markov, "_CHUNK", 777)
    chunked = KmerCounts(4)
    chunked.add(ids)
    for a, b in zip(whole.counts, chunked.counts):
        assert np.array_equal(a, b)


def test_smoothing_backs_off_to_shorter_contexts():
    counts = KmerCounts(2)
    counts.add(encode("AAAAAAAAAAC"))
    tables = smoothed_log2_tables(counts, 2, beta=4.0)
    for table in tables:
        probs = np.exp2(table).reshape(-1, 4)
        assert np.allclose(probs.sum(1), 1, atol=1e-5) and probs.min() > 0
    order1 = np.exp2(tables[1]).reshape(4, 4)
    order2 = np.exp2(tables[2]).reshape(16, 4)
    assert np.allclose(order2[4 * 2 + 2], order1[2])  # context GG never seen: the order-1 distribution
    n_aa = counts.counts[2].reshape(16, 4)[0]  # AA followed by A, C, G, T
    assert np.allclose(order2[0], (n_aa + 4.0 * order1[0]) / (n_aa.sum() + 4.0))


def test_posterior_near_unknown_bases_matches_the_formula():
    rng = np.random.default_rng(5)
    counts = KmerCounts(2)
    counts.add(rng.integers(0, 4, 5000).astype(np.uint8))
    model = MarkovModel.fit(counts, 2, beta=2.0)
    t1, t2 = (np.exp2(t).reshape(-1, 4) for t in model.tables[1:3])
    ids = encode("GTACAGNTT")  # masked base at 4: ..A C [x] G N
    got = np.exp2(model.masked_log2_probs(ids, np.array([4])))[0]
    # factors: P(x | A C) and P(G | C x); P(N | ...) unknown and the T after N no longer reaches x
    want = np.array([t2[4 * 0 + 1, a] * t2[4 * 1 + a, 2] for a in range(4)])
    assert np.allclose(got, want / want.sum(), atol=1e-6)
    # at a sequence end the context is just shorter
    got = np.exp2(model.masked_log2_probs(ids, np.array([1])))[0]  # G [x] A C
    want = np.array([t1[2, a] * t2[4 * 2 + a, 0] * t2[4 * a + 0, 1] for a in range(4)])
    assert np.allclose(got, want / want.sum(), atol=1e-6)


def test_posterior_paths_agree_where_all_flanks_are_known():
    rng = np.random.default_rng(6)
    counts = KmerCounts(4)
    counts.add(rng.integers(0, 4, 20_000).astype(np.uint8))
    model = MarkovModel.fit(counts, 4, beta=8.0)
    ids = rng.integers(0, 4, 200).astype(np.uint8)
    positions = np.arange(10, 190)
    fast = model._flanked(ids.astype(np.int64), positions)
    slow = np.stack([model._near_unknown(ids.astype(np.int64), ids < N, int(p)) for p in positions])
    assert np.allclose(fast, slow, atol=1e-4)
    probs = np.exp2(model.masked_log2_probs(ids, positions))
    assert np.allclose(probs.sum(1), 1)


def test_base_composition_is_gc_content_on_both_strands():
    counts = KmerCounts(0)
    counts.add(encode("GGGGGGAAAC"))  # both strands: G+C = 7 + 7 of 20
    probs = np.exp2(composition_log2_probs(counts))
    assert np.allclose(probs, [0.15, 0.35, 0.35, 0.15])
