"""Shared by the tests/test_train_*.py files: a small learnable genome store and tiny configs."""

import numpy as np
import pytest
import torch

from genossm.store import create_store
from genossm.train.config import config_from_dict

# held-out regions (0-based half-open) of the genome below; written lowercase so a test can see
# from the soft-mask track alone whether a window touched them
HELDOUT = {
    "val": [("chr1", 0, 300), ("chr1", 9000, 9400), ("plasmid", 2900, 3100)],
    "test": [("chr1", 11_600, 12_000)],
}
LENGTHS = {"chr1": 12_000, "chr2": 5000, "plasmid": 3200}


def genome_sequences(seed: int = 0) -> list:
    """Contigs built from a few 40-base motifs with 5% mutations: context predicts the masked base."""
    rng = np.random.default_rng(seed)
    motifs = rng.integers(0, 4, size=(6, 40))
    out = []
    for name, length in LENGTHS.items():
        blocks = motifs[rng.integers(0, len(motifs), size=length // 40 + 1)].reshape(-1)[:length].copy()
        mutate = rng.random(length) < 0.05
        blocks[mutate] = rng.integers(0, 4, size=int(mutate.sum()))
        letters = np.frombuffer(b"ACGT", dtype=np.uint8)[blocks]
        out.append((name, letters.tobytes().decode()))
    return out


def make_store(path, seed: int = 0, n_run=None):
    """The genome above with its held-out regions soft-masked; ``n_run`` = (contig, start, end) of Ns."""
    sequences = []
    for name, seq in genome_sequences(seed):
        chars = list(seq)
        for split in HELDOUT.values():
            for contig, start, end in split:
                if contig == name:
                    chars[start:end] = [c.lower() for c in chars[start:end]]
        if n_run and n_run[0] == name:
            chars[n_run[1] : n_run[2]] = ["N"] * (n_run[2] - n_run[1])
        sequences.append((name, "".join(chars)))
    return create_store(path, sequences, topology={"plasmid": "circular"}, heldout=HELDOUT)


# `python ddp.py CONFIG OUT`: one rank of a run into OUT/run that also saves its final weights as
# OUT/rank<N>.pt, so a test can check that every rank ends with the same model.
DDP_SCRIPT = """
import sys, torch
from genossm.train import load_config, train
from genossm.train.module import MaskedLMModule

def dump(self):  # each rank records the weights it ends with
    torch.save({k: v.detach().clone() for k, v in self.model.state_dict().items()},
               f"{sys.argv[2]}/rank{self.global_rank}.pt")

MaskedLMModule.on_train_end = dump
train(load_config(sys.argv[1]), run_dir=f"{sys.argv[2]}/run")
"""


def tiny_config(store, **sections):
    """A TrainConfig for a model small enough to train steps in well under a second on CPU."""
    raw = {
        "seed": 7,
        "model": {"d_model": 16, "n_layer": 2},
        "data": {"store": str(store), "window": 256, "batch_size": 4, "num_workers": 0},
        "optim": {"lr": 5e-3, "warmup_steps": 3},
        "trainer": {"max_steps": 10, "val_every_n_steps": 5, "checkpoint_every_n_steps": 5,
                    "log_every_n_steps": 1, "accelerator": "cpu", "progress_bar": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return config_from_dict(raw, source="test")


@pytest.fixture
def one_thread():
    """One intra-op thread: two xdist workers on two cores otherwise oversubscribe and crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
