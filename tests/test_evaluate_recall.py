"""Long-range recall: the synthetic sequences (planted key/value, mirror case, chance repeats
rejected), the truncated-context baseline's crops, settings checks, and the CLI smoke run."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from train_helpers import one_thread  # noqa: F401 (fixture)

from genossm.cli import main
from genossm.errors import GenossmError
from genossm.evaluate import recall
from genossm.evaluate.recall import LengthCurriculum, RecallConfig, summarize
from genossm.evaluate.recall_task import (
    RecallBatch,
    kmer_positions,
    make_batch,
    make_key,
    neighbourhood_crop,
    neighbourhood_fits,
)
from genossm.model import GenoSSM, GenoSSMConfig
from genossm.tokenize import MASK

CLI = [sys.executable, "-c", "from genossm.cli import main; main()", "evaluate", "recall", "--threads", "1",
       "--no-progress"]


def unmasked(batch):
    """The sequences with the masked value written back."""
    ids = batch.ids.copy()
    v = batch.targets.shape[1]
    for b, q in enumerate(batch.query):
        assert np.all(ids[b, q : q + v] == MASK)
        ids[b, q : q + v] = batch.targets[b]
    return ids


def test_forward_examples_plant_key_then_value_far_apart():
    rng = np.random.default_rng(0)
    key = make_key(rng, 16)
    batch = make_batch(rng, key, 8, 4096, 6, mirror=False, placement="far")
    assert batch.ids.shape == (6, 4096) and batch.targets.shape == (6, 8)
    for b, seq in enumerate(unmasked(batch)):
        p, q = batch.pair[b], batch.query[b]
        assert np.array_equal(kmer_positions(seq, key), [p, q - 16])  # exactly two keys
        assert np.array_equal(seq[p + 16 : p + 24], batch.targets[b])  # the value follows the first
        assert 16 <= p <= 16 + 4096 // 32 and 16 <= 4096 - (q + 8) <= 16 + 4096 // 32
        assert np.count_nonzero(batch.ids[b] == MASK) == 8 and seq.max() < 4


def test_mirror_is_the_forward_example_read_backwards():
    key = make_key(np.random.default_rng(1), 16)
    forward = make_batch(np.random.default_rng(2), key, 8, 2048, 3, mirror=False, placement="far")
    mirror = make_batch(np.random.default_rng(2), key, 8, 2048, 3, mirror=True, placement="far")
    assert np.array_equal(mirror.ids, forward.ids[:, ::-1])
    assert np.array_equal(mirror.targets, forward.targets[:, ::-1])
    for b, seq in enumerate(unmasked(mirror)):
        q, p = mirror.query[b], mirror.pair[b]
        assert q < p  # query early, pair late
        assert np.array_equal(kmer_positions(seq, key[::-1]), [q + 8, p + 8])  # value, then the key reversed
        assert np.array_equal(seq[p : p + 8], mirror.targets[b])


def test_chance_repeats_of_the_key_are_rejected():
    key = make_key(np.random.default_rng(3), 6)  # short enough to recur by chance in 400 bases
    raw = np.random.default_rng(4).integers(0, 4, (300, 400)).astype(np.uint8)
    assert sum(len(kmer_positions(seq, key)) > 0 for seq in raw) > 10  # so the check below can fail
    batch = make_batch(np.random.default_rng(5), key, 4, 400, 300, mirror=False, placement="anywhere")
    for b, seq in enumerate(unmasked(batch)):
        assert np.array_equal(kmer_positions(seq, key), [batch.pair[b], batch.query[b] - 6])
        assert len(kmer_positions(seq, key[::-1])) == 0


def test_distractors_are_near_misses_that_leave_pair_and_query_intact():
    rng = np.random.default_rng(8)
    key = make_key(rng, 16)
    plain = make_batch(np.random.default_rng(9), key, 8, 2000, 20, mirror=False, placement="anywhere")
    batch = make_batch(np.random.default_rng(9), key, 8, 2000, 20, mirror=False, placement="anywhere",
                       distractors=6)
    assert not np.array_equal(plain.ids, batch.ids)
    near = 0
    for b, seq in enumerate(unmasked(batch)):
        p, q = batch.pair[b], batch.query[b]
        assert np.array_equal(kmer_positions(seq, key), [p, q - 16])  # still exactly two keys
        assert np.array_equal(seq[p + 16 : p + 24], batch.targets[b])
        windows = np.lib.stride_tricks.sliding_window_view(seq, 16)
        mismatches = (windows != key).sum(1)
        near += np.count_nonzero((mismatches >= 1) & (mismatches <= 2))
    # ~6 per sequence minus those dropped on the pair or query; chance near-misses: ~1e-5 per position
    assert 20 * 4 <= near <= 20 * 6
    again = make_batch(np.random.default_rng(9), key, 8, 2000, 20, mirror=False, placement="anywhere")
    assert np.array_equal(plain.ids, again.ids)  # no distractors: the draws of before


def test_anywhere_placement_covers_short_and_long_distances():
    rng = np.random.default_rng(6)
    key = make_key(rng, 16)
    batch = make_batch(rng, key, 4, 1000, 200, mirror=False, placement="anywhere")
    distance = batch.query - batch.pair
    assert distance.min() >= 20 and distance.max() <= 1000 - 4
    assert distance.min() < 200 and distance.max() > 700


@pytest.mark.parametrize("length", [300, 1024, 5000])
def test_neighbourhood_check_agrees_with_the_crop(length):
    """neighbourhood_fits (checked before training) is true exactly where the crop leaves the pair
    out in the worst far placement: pair and query at their inmost positions, either direction."""
    v, span, edge = 8, 24, 16 + length // 32
    ids = np.zeros((2, length), dtype=np.uint8)
    worst = RecallBatch(ids, np.zeros((2, v), dtype=np.uint8),
                        query=np.array([length - v - edge, edge]),  # forward; mirror
                        pair=np.array([edge, length - edge - span]))
    for neighbourhood in range(16, length, 7):
        try:
            neighbourhood_crop(worst, neighbourhood, 16)
            crops_ok = True
        except GenossmError:
            crops_ok = False
        assert neighbourhood_fits(length, neighbourhood, 16, v) == crops_ok, neighbourhood


def test_truncated_context_keeps_the_query_and_drops_the_pair():
    rng = np.random.default_rng(7)
    key = make_key(rng, 16)
    for mirror in (False, True):
        batch = make_batch(rng, key, 8, 8192, 4, mirror=mirror, placement="far")
        crop, starts = neighbourhood_crop(batch, 64, 16)
        assert crop.shape == (4, 2 * 64 + 8)
        for b in range(4):
            assert np.all(crop[b, starts[b] : starts[b] + 8] == MASK)
            seq = crop[b].copy()
            seq[starts[b] : starts[b] + 8] = batch.targets[b]
            assert len(kmer_positions(seq, key[::-1] if mirror else key)) == 1  # the query's key, not the pair's
        with pytest.raises(GenossmError, match="reaches the planted pair"):
            neighbourhood_crop(batch, 8000, 16)


@pytest.mark.parametrize("change, match", [
    ({"key_length": 12}, "key_length"),
    ({"lengths": (40,)}, "lengths"),
    ({"directions": ("forward", "sideways")}, "directions"),
    ({"neighbourhood": 4}, "neighbourhood"),
    ({"min_train_length": 10}, "min_train_length"),
    ({"advance_loss": 0.0}, "advance_loss"),
    ({"advance_window": 0}, "advance_window"),
    ({"stop_loss": -1.0}, "stop_loss"),
    ({"distractors": -1}, "distractors"),
    ({"lengths": (512, 2048), "neighbourhood": 240}, "neighbourhood"),  # 512: the crop reaches the pair
    ({"max_train_seconds": 0.0}, "max_train_seconds"),
    ({"dt_min": 0.5}, "dt_min"),  # above the model's dt_max
    ({"dt_filter": (0.9, 1.0)}, "dt_filter"),
])
def test_bad_settings_are_refused(change, match):
    config = RecallConfig(**{**RecallConfig.smoke().__dict__, **change})
    with pytest.raises(GenossmError, match=match):
        config.check()


def test_length_curriculum_doubles_on_low_loss_up_to_the_end():
    curriculum = LengthCurriculum(64, 300, advance_loss=0.2)
    assert curriculum.longest == 64
    assert not curriculum.update(0.2) and curriculum.longest == 64  # not below the threshold
    assert curriculum.update(0.19) and curriculum.longest == 128
    assert curriculum.update(0.0) and curriculum.longest == 256
    assert curriculum.update(0.1) and curriculum.longest == 300  # capped
    assert not curriculum.update(0.1) and curriculum.longest == 300
    assert LengthCurriculum(64, 300, 0.2, enabled=False).longest == 300


def test_training_follows_the_curriculum(one_thread):
    """A threshold above any loss advances after every window; the lengths drawn stay within the
    stage's longest."""
    config = replace(RecallConfig.smoke(), steps=6, advance_loss=100.0, advance_window=2, seeds=(0,), distractors=3)
    key = make_key(np.random.default_rng(0), config.key_length)
    drawn = []
    real_make_batch = recall.make_batch
    def spy(rng, key, value_length, length, *args):
        drawn.append(length)
        assert args[-1] == 3  # the distractors setting reaches the training batches
        return real_make_batch(rng, key, value_length, length, *args)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recall, "make_batch", spy)
        _, curve, stages, stopped = recall.train_recall_model(config, key, 0, torch.device("cpu"), None,
                                                              progress=False)
    assert stages == [[0, 128], [2, 256], [4, 512]]  # smoke: 128 -> train_length 512
    assert stopped == "steps" and curve[-1][0] == 6
    lengths_per_step = drawn[::2]  # forward and mirror halves draw one length per step
    assert max(lengths_per_step[:2]) <= 128 and max(lengths_per_step[2:4]) <= 256
    assert all(128 <= n <= 512 for n in drawn)


@pytest.mark.parametrize("change, stopped, steps", [
    # a stop threshold above any loss: the first window once the curriculum is done (step 4 of 4..6)
    ({"stop_loss": 100.0}, "converged", 6),
    ({"stop_loss": 100.0, "curriculum": False}, "converged", 2),
    ({"max_train_seconds": 1e-9}, "time limit", 1),
])
def test_training_stops_early_when_converged_or_out_of_time(one_thread, change, stopped, steps):
    config = replace(RecallConfig.smoke(), steps=20, advance_loss=100.0, advance_window=2, seeds=(0,), **change)
    key = make_key(np.random.default_rng(0), config.key_length)
    _, curve, _, why = recall.train_recall_model(config, key, 0, torch.device("cpu"), None, progress=False)
    assert why == stopped and curve[-1][0] == steps


def test_summary_over_seeds():
    rows = [{"direction": "forward", "length": 64, "accuracy": a, "exact_match": 0.0, "bits_per_base": 2.0,
             "truncated_accuracy": 0.25, "truncated_exact_match": 0.0} for a in (0.5, 1.0)]
    (entry,) = summarize(rows, value_length=2)
    assert entry["accuracy"] == {"mean": 0.75, "sd": pytest.approx(0.3535534), "min": 0.5}
    assert entry["chance_exact_match"] == 1 / 16


def test_cli_smoke_run(tmp_path):
    out = tmp_path / "recall.json"
    done = subprocess.run([*CLI, "--smoke", "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    config = RecallConfig.smoke()
    assert record["evaluation"] == "recall" and record["smoke"] is True
    assert record["command"] == "genossm evaluate recall --output " + str(out) + " --smoke --threads 1 --no-progress"
    assert record["device"].startswith("CPU") and record["started"] <= record["finished"]
    assert len(record["git_commit"] or "x" * 40) == 40
    assert record["config"]["lengths"] == list(config.lengths)
    assert len(record["training"]) == len(config.seeds)
    for run in record["training"]:
        assert [step for step, _ in run["loss_curve"]] == list(range(2, config.steps + 1, 2))
        assert run["final_train_loss"] == run["loss_curve"][-1][1] > 0
    assert len(record["results"]) == len(config.seeds) * len(config.lengths) * 2
    for row in record["results"]:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["truncated_accuracy"] <= 1 and row["bits_per_base"] > 0
    assert {(s["direction"], s["length"]) for s in record["summary"]} == \
        {(d, n) for d in ("forward", "mirror") for n in config.lengths}
    assert "truncated context" in done.stdout and "mirror" in done.stdout  # the table


def test_cli_saves_the_models_it_evaluates(tmp_path, one_thread):
    """--save-models: each seed's model, loadable, with the --dt-min it was built with; the record
    holds its memory horizons, one row per layer and direction."""
    out, models = tmp_path / "recall.json", tmp_path / "models"
    done = CliRunner().invoke(main, ["evaluate", "recall", "--smoke", "--no-progress", "--seeds", "0,1", "--steps", "2",
                                     "--lengths", "512", "--examples", "2", "--dt-min", "1e-5",
                                     "--save-models", str(models), "-o", str(out)])
    assert done.exit_code == 0, done.stderr
    record = json.loads(out.read_text())
    for run in record["training"]:
        model = GenoSSM.from_pretrained(models / f"seed{run['seed']}")
        assert model.config.dt_min == 1e-5 and model.config.n_layer == RecallConfig.smoke().n_layer
        rows = run["memory_horizons"]
        assert [(h["layer"], h["direction"]) for h in rows] == \
            [(i, d) for i in range(model.config.n_layer) for d in ("forward", "reverse")]
        assert all(h["longest"] >= h["median"] > 0 and set(h["channels_reaching"]) == {"512"} for h in rows)
    assert "longest memory horizon" in done.stdout
    # --load-models: the saved models, not trained again, give the same numbers on the same sequences
    again = tmp_path / "again.json"
    done = CliRunner().invoke(main, ["evaluate", "recall", "--smoke", "--no-progress", "--seeds", "0,1",
                                     "--lengths", "512", "--examples", "2", "--load-models", str(models),
                                     "-o", str(again)])
    assert done.exit_code == 0, done.stderr
    loaded = json.loads(again.read_text())
    assert [run["loaded_from"] for run in loaded["training"]] == [str(models / "seed0"), str(models / "seed1")]
    assert [run["memory_horizons"] for run in loaded["training"]] == [run["memory_horizons"]
                                                                     for run in record["training"]]
    assert loaded["results"] == record["results"]
    assert f"models loaded from {models}" in done.stdout
    # a row's sequences follow its length, not which other lengths are evaluated
    other = tmp_path / "other.json"
    done = CliRunner().invoke(main, ["evaluate", "recall", "--smoke", "--no-progress", "--seeds", "0",
                                     "--lengths", "256,512", "--examples", "2", "--load-models", str(models),
                                     "-o", str(other)])
    assert done.exit_code == 0, done.stderr
    rows = [r for r in json.loads(other.read_text())["results"] if r["length"] == 512]
    assert rows == [r for r in record["results"] if r["seed"] == 0]


def test_cli_load_models_refuses_a_missing_seed_or_other_training_length(tmp_path, one_thread):
    models = tmp_path / "models"
    GenoSSM(GenoSSMConfig(d_model=16, n_layer=2, context_length=1024)).save_pretrained(models / "seed0")
    base = ["evaluate", "recall", "--smoke", "--no-progress", "--lengths", "512", "--examples", "2",
            "--load-models", str(models), "-o", str(tmp_path / "out.json")]
    done = CliRunner().invoke(main, [*base, "--seeds", "1"])
    assert done.exit_code == 2 and "seed1" in done.stderr and "--save-models" in done.stderr
    done = CliRunner().invoke(main, [*base, "--seeds", "0"])
    assert done.exit_code == 2 and "--train-length 1024" in done.stderr
    assert not (tmp_path / "out.json").exists()


def test_cli_dt_filter_scores_the_same_sequences_again(tmp_path, one_thread):
    """--dt-filter: every row also holds the metrics under each quantile's filter, the training
    record each calibration (channels filtered per layer and direction) and the filtered horizons;
    the table a column per quantile."""
    out = tmp_path / "recall.json"
    done = CliRunner().invoke(main, ["evaluate", "recall", "--smoke", "--no-progress", "--seeds", "0", "--steps", "2",
                                     "--lengths", "512,2048", "--examples", "2", "--dt-min", "1e-5",
                                     "--dt-filter", "0.9,0.99", "-o", str(out)])
    assert done.exit_code == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["config"]["dt_filter"] == [0.9, 0.99]
    for row in record["results"]:
        for q in ("0.9", "0.99"):
            assert 0 <= row[f"dt_filter_{q}_accuracy"] <= 1 and row[f"dt_filter_{q}_bits_per_base"] > 0
        assert "stream" not in row
    (run,) = record["training"]
    assert [f["quantile"] for f in run["dt_filter"]] == [0.9, 0.99]
    for filt in run["dt_filter"]:
        assert filt["min_horizon"] == RecallConfig.smoke().train_length
        assert [(c["layer"], c["direction"]) for c in filt["channels"]] == [(h["layer"], h["direction"])
                                                                          for h in filt["memory_horizons"]]
        assert sum(c["filtered_channels"] for c in filt["channels"]) > 0  # dt_min 1e-5: long horizons
        # skipping positions can only lengthen a channel's memory (layer 0: its input is the same)
        assert all(f["longest"] >= h["longest"] for f, h in zip(filt["memory_horizons"][:2], run["memory_horizons"]))
    assert all("dt_filter_0.99_exact_match" in row for row in record["summary"])
    assert "dt filter 0.9" in done.stdout and "dt filter 0.99" in done.stdout


def test_cli_json_to_stdout(one_thread):
    done = CliRunner().invoke(main, ["evaluate", "recall", "--smoke", "--no-progress", "--seeds", "3", "--steps", "2",
                                     "--lengths", "512", "--examples", "2", "--directions", "mirror", "-o", "-"])
    assert done.exit_code == 0, done.stderr
    record = json.loads(done.stdout)
    assert [(r["seed"], r["direction"], r["length"]) for r in record["results"]] == [(3, "mirror", 512)]
    assert record["command"] == ("genossm evaluate recall --output - --smoke --no-progress --seeds 3 --lengths 512 "
                                 "--directions mirror --steps 2 --examples 2")
    assert "truncated context" in done.stderr


def test_cli_refuses_a_short_key(tmp_path):
    out = tmp_path / "bad.json"
    done = CliRunner().invoke(main, ["evaluate", "recall", "--smoke", "--key-length", "8", "-o", str(out)])
    assert done.exit_code == 2 and not out.exists()
    assert done.stderr.strip().splitlines()[-1].startswith("genossm: error: recall setting key_length")
