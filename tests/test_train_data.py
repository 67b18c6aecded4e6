"""Training data: window planning, held-out exclusion, validation windows, exact data order."""

import numpy as np
import pytest
import torch
from train_helpers import HELDOUT, LENGTHS, genome_sequences, make_store, tiny_config

from genossm.errors import GenossmError
from genossm.store import TokenStore, build_store, create_store
from genossm.tokenize import COMPLEMENT, N, PAD, reverse_complement
from genossm.train.data import GenomeDataModule
from genossm.train.windows import Layout, TrainingStretches, _free_stretches, validation_windows


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("train_data") / "genome.store").path


def datamodule(store, rank=0, world_size=1, accumulate=1, max_steps=20, **data):
    config = tiny_config(store, data=data)
    dm = GenomeDataModule(config.data, seed=config.seed, accumulate_grad_batches=accumulate, max_steps=max_steps)
    dm.setup()
    dm.rank, dm.world_size = rank, world_size
    return dm


def batches(loader, count):
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == count:
            return out
    return out


def test_free_stretches_linear_and_circular():
    assert _free_stretches(100, [], False) == [(0, 100)]
    assert _free_stretches(100, [(0, 10), (90, 100)], False) == [(10, 90)]
    assert _free_stretches(100, [(20, 30), (25, 40)], False) == [(0, 20), (40, 100)]
    # circular: the free ends meet across the origin in one stretch that runs past the end
    assert _free_stretches(100, [(40, 60)], True) == [(60, 140)]
    assert _free_stretches(100, [(0, 10)], True) == [(10, 100)]
    assert _free_stretches(100, [(10, 20), (50, 60)], True) == [(20, 50), (60, 110)]
    assert _free_stretches(100, [(0, 100)], True) == []


def test_sampling_is_weighted_by_length_and_stays_inside_stretches():
    layout = Layout(["a", "b", "c"], np.array([1000, 3000, 100]), np.array([False, False, True]),
                    {"val": [("b", 1000, 2000)]})
    stretches = TrainingStretches(layout)
    rng = np.random.default_rng(0)
    counts = np.zeros(3)
    for _ in range(6000):
        contig, start, end = stretches.sample(rng, 200)
        counts[contig] += 1
        if contig == 1:
            assert end <= 1000 or start >= 2000  # never into b's held-out region
        if contig == 2:
            assert end - start == 100  # a circular contig shorter than the window: one whole turn
        else:
            assert end - start == 200 and 0 <= start and end <= layout.lengths[contig]
    np.testing.assert_allclose(counts / counts.sum(), [1000 / 3100, 2000 / 3100, 100 / 3100], atol=0.02)


def test_validation_windows_cover_each_heldout_base_once_with_context():
    layout = Layout(["lin", "circ", "short"], np.array([1000, 1000, 50]), np.array([False, True, False]),
                    {"val": [("lin", 0, 30), ("lin", 900, 1000), ("lin", 400, 700), ("circ", 980, 1000),
                             ("short", 10, 20)]})
    windows = validation_windows(layout, 128, "val")
    scored = {name: np.zeros(length, dtype=int) for name, length in zip(layout.names, layout.lengths)}
    for w in windows:
        name, length = layout.names[w.contig], int(layout.lengths[w.contig])
        assert w.length == min(128, length) and 0 <= w.score_start < w.score_end <= w.length
        positions = (w.start + np.arange(w.score_start, w.score_end)) % length
        np.add.at(scored[name], positions, 1)
        if not layout.circular[w.contig]:
            assert 0 <= w.start and w.start + w.length <= length  # linear: no padding when the contig is long
    for name, regions in (("lin", [(0, 30), (900, 1000), (400, 700)]), ("circ", [(980, 1000)]),
                          ("short", [(10, 20)])):
        expected = np.zeros_like(scored[name])
        for start, end in regions:
            expected[start:end] = 1
        np.testing.assert_array_equal(scored[name], expected)
    # the region at the left end of a linear contig takes its context from the right
    first = windows[0]
    assert (first.start, first.score_start, first.score_end) == (0, 0, 30)
    # a short region on a circular contig is centred, with context wrapping around the origin
    circ = next(w for w in windows if layout.names[w.contig] == "circ")
    assert circ.score_start == (128 - 20) // 2 and circ.start + circ.length > 1000
    assert len(validation_windows(layout, 128, "val", max_windows=3)) == 3


def test_training_windows_never_contain_heldout_bases(store):
    dm = datamodule(store, window=512)
    dataset = dm.train_dataset()
    lengths_seen = set()
    for number in range(400):
        sample = dataset[number]
        real = sample["input_ids"] != PAD
        lengths_seen.add(int(real.sum()))
        assert not sample["softmask"].any(), f"sample {number} overlaps a held-out region"
        assert sample["loss_mask"].all()
    assert lengths_seen == {512}  # every training stretch here is longer than the window


def test_validation_batches_score_exactly_the_heldout_bases(store):
    dm = datamodule(store, window=256)
    heldout_val = sum(end - start for _, start, end in HELDOUT["val"])
    scored = 0
    for batch in dm.val_dataloader():
        mask, soft, ids = batch["loss_mask"], batch["softmask"], batch["input_ids"]
        assert soft[mask].all()  # scored positions are held-out (lowercase) bases
        scored += int(mask.sum())
        # context: real training bases around short held-out chunks
        assert ((ids != PAD) & ~mask).any()
    assert scored == heldout_val


def test_validation_shares_are_equal_and_cover_each_window_once(store):
    scored = {}
    for world_size in (1, 2, 3, 7):
        shares = [datamodule(store, rank=r, world_size=world_size).val_dataloader().dataset for r in range(world_size)]
        assert len({len(share) for share in shares}) == 1  # the same number of validation steps on every rank
        counts = {}
        for share in shares:
            for j in range(len(share)):
                sample = share[j]
                if sample["loss_mask"].any():
                    key = sample["input_ids"].numpy().tobytes() + sample["loss_mask"].numpy().tobytes()
                    counts[key] = counts.get(key, 0) + 1
        assert set(counts.values()) == {1}
        scored[world_size] = set(counts)
    assert scored[1] == scored[2] == scored[3] == scored[7]


def test_data_order_is_a_function_of_seed_step_and_rank(store):
    a = batches(datamodule(store, accumulate=2).train_loader(), 10)
    b = batches(datamodule(store, accumulate=2, num_workers=2).train_loader(), 10)
    for x, y in zip(a, b):  # worker processes do not change the order
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["seed"], y["seed"])
    # a loader resumed at optimizer step 3 (micro-batch 6 with accumulation 2) continues identically
    resumed = batches(datamodule(store, accumulate=2).train_loader(start_step=3), 4)
    for x, y in zip(a[6:], resumed):
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["softmask"], y["softmask"])
        assert torch.equal(x["seed"], y["seed"])
    other_rank = batches(datamodule(store, rank=1, world_size=2, accumulate=2).train_loader(), 1)
    other_seed = GenomeDataModule(tiny_config(store).data, seed=8, accumulate_grad_batches=2, max_steps=20)
    other_seed.setup()
    for x in other_rank + batches(other_seed.train_loader(), 1):
        assert not torch.equal(x["input_ids"], a[0]["input_ids"])


def test_run_sampler_length_is_the_whole_run(store):
    dm = datamodule(store, accumulate=4, max_steps=5)
    assert len(dm.train_loader()) == 20 and len(dm.train_loader(start_step=3)) == 20
    assert len(list(dm.train_loader(start_step=3))) == 8


def test_reverse_complement_augmentation(store):
    plain = datamodule(store, rc_augment=False).train_dataset()
    augmented = datamodule(store, rc_augment=True).train_dataset()
    flipped = 0
    for number in range(200):
        x, y = plain[number]["input_ids"].numpy(), augmented[number]["input_ids"].numpy()
        if np.array_equal(x, y):
            continue
        np.testing.assert_array_equal(y, reverse_complement(x))
        flipped += 1
    assert 60 < flipped < 140
    assert np.array_equal(COMPLEMENT[COMPLEMENT], np.arange(7))


def test_n_fraction_filter(tmp_path):
    path = make_store(tmp_path / "n.store", n_run=("chr2", 0, 4000)).path
    dataset = datamodule(path, window=512, max_n_fraction=0.1).train_dataset()
    for number in range(300):
        ids = dataset[number]["input_ids"]
        assert (ids == N).float().mean() <= 0.1
    unfiltered = datamodule(path, window=512, max_n_fraction=1.0).train_dataset()
    assert any((unfiltered[k]["input_ids"] == N).float().mean() > 0.5 for k in range(300))


def test_window_longer_than_every_contig_is_padded(store):
    dataset = datamodule(store, window=16_384).train_dataset()
    stretches = {8700, 2200, 5000, 3000}  # chr1 [300, 9000) and [9400, 11600), chr2, plasmid (3100, 6100)
    seen = set()
    for number in range(100):
        sample = dataset[number]
        real = int((sample["input_ids"] != PAD).sum())
        assert sample["input_ids"].shape == (16_384,) and not sample["softmask"].any()
        seen.add(real)
    assert seen == stretches


def test_reads_store_samples_whole_reads_padded(tmp_path, shared_data):
    pytest.importorskip("pysam")
    store = build_store([shared_data / "celegans_reads" / "ce_1000.bam"], tmp_path / "reads.store", progress=False)
    assert store.is_reads
    reads = {}
    for name in store.names[:2000]:
        reads.setdefault(store.length(name), set()).add(store.window(name, 0, store.length(name))[0].tobytes())
    dataset = datamodule(store.path, window=256, rc_augment=False).train_dataset()
    for number in range(100):
        ids = dataset[number]["input_ids"].numpy()
        real = ids[ids != PAD]
        assert (ids[len(real):] == PAD).all()  # one read, left-aligned, padded
        assert real.tobytes() in reads[len(real)]


def test_store_errors_name_the_store(tmp_path):
    with pytest.raises(GenossmError, match="missing.store.*manifest"):
        datamodule(tmp_path / "missing.store")
    everything = {"val": [(name, 0, length) for name, length in LENGTHS.items()]}
    create_store(tmp_path / "all.store", genome_sequences(), heldout=everything)
    with pytest.raises(GenossmError, match="no training bases"):
        datamodule(tmp_path / "all.store")
    assert TokenStore.open(tmp_path / "all.store").heldout("val")


def test_ecoli_last_tenth_held_out(tmp_path, shared_data):
    """The real circular E. coli chromosome with its last 10% held out, at a 131,072-base window."""
    fasta = shared_data / "ecoli" / "GCF_000005845.2_ASM584v2_genomic.fna.gz"
    store = build_store([fasta], tmp_path / "ecoli.store", topology="circular", holdout_fraction=0.1, progress=False)
    (name, start, end), = store.heldout("val")
    length = store.length(name)
    assert end == length and store.topology(name) == "circular"
    dm = datamodule(store.path, window=131_072)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        _, a, b = dm.stretches.sample(rng, 131_072)
        assert 0 <= a and b <= start  # the held-out end is never sampled, nor reached by wrapping
    scored = 0
    for w in dm.val_windows:
        scored += w.score_end - w.score_start
        assert w.length == 131_072
    assert scored == end - start
    last = dm.val_windows[-1]  # the region's last, short chunk: context wraps around the origin
    assert last.start + last.length > length and last.score_end < last.length
    batch = next(iter(dm.val_dataloader()))
    assert not (batch["input_ids"] == PAD).any()
