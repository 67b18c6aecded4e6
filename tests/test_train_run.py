"""Training runs end to end on CPU: loss goes down, exact resume after a signal, export, DDP."""

import csv
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_helpers import DDP_SCRIPT, make_store, one_thread, tiny_config  # noqa: F401 (fixture)

from genossm.errors import GenossmError
from genossm.model import GenoSSM
from genossm.store import build_store, create_store
from genossm.train import train
from genossm.train.callbacks import TrainingInterrupted
from genossm.train.config import MaskingConfig, save_config
from genossm.tokenize import N
from genossm.train.data import GenomeDataModule
from genossm.train.module import MaskedLMModule, mask_tokens

CLI = [sys.executable, "-c", "from genossm.cli import main; main()", "train"]


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch, one_thread):
    """In-process runs must not mistake a surrounding SLURM job for their launcher."""
    for key in list(os.environ):
        if key.startswith("SLURM_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("train_run") / "genome.store").path


def metrics(run_dir, version=None):
    """Rows of every logs/csv/version_*/metrics.csv (or one version), as dicts of floats."""
    versions = sorted((run_dir / "logs" / "csv").glob("version_*")) if version is None else \
        [run_dir / "logs" / "csv" / f"version_{version}"]
    rows = []
    for v in versions:
        with open(v / "metrics.csv") as f:
            rows += [{k: float(x) for k, x in row.items() if x != ""} for row in csv.DictReader(f)]
    return rows


def train_losses(rows):
    return {int(r["step"]): r["train_loss"] for r in rows if "train_loss" in r}


def val_losses(rows):
    return {int(r["step"]): r for r in rows if "val_loss" in r}


def val_loss_by_step(rows):
    return {step: r["val_loss"] for step, r in val_losses(rows).items()}


def step_of(ckpt) -> int:
    return torch.load(ckpt, weights_only=True)["global_step"]


def best_score(run) -> float:
    """The lowest val_loss as checkpoints/last.ckpt records it (what a resumed run compares with)."""
    states = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    (best,) = [state for key, state in states.items() if "'monitor': 'val_loss'" in key]
    return float(best["best_model_score"])


def test_short_run_lowers_the_loss_and_exports(tmp_path, store):
    config = tiny_config(store, trainer={"max_steps": 30, "val_every_n_steps": 10, "checkpoint_every_n_steps": 10})
    run = train(config, run_dir=tmp_path / "run")
    for path in ("config.yaml", "checkpoints/last.ckpt", "checkpoints/best.ckpt", "logs/csv/version_0/metrics.csv",
                 "model/config.json", "model/model.safetensors"):
        assert (run / path).is_file(), path
    assert list((run / "logs" / "tensorboard" / "version_0").glob("events.out.tfevents.*"))
    rows = metrics(run)
    losses = list(train_losses(rows).values())
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2
    vals = list(val_losses(rows).values())
    assert len(vals) == 3 and vals[-1]["val_loss"] < vals[0]["val_loss"]
    last = vals[-1]
    assert last["val_perplexity"] == pytest.approx(math.exp(last["val_loss"]), rel=1e-5)
    assert last["val_bits_per_base"] == pytest.approx(last["val_loss"] / math.log(2), rel=1e-5)
    assert 0.25 < last["val_accuracy"] <= 1.0 and last["val_bases"] > 0

    # the checkpoint loads without unpickling code and holds the model under "model."
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 30 and ckpt["hyper_parameters"]["model"] == config.model.to_dict()
    weights = {k[len("model."):]: v for k, v in ckpt["state_dict"].items()}
    assert all(k.startswith("model.") for k in ckpt["state_dict"])
    exported = load_file(run / "model" / "model.safetensors")
    assert exported.keys() == weights.keys() and all(torch.equal(exported[k], weights[k]) for k in weights)

    ids = torch.randint(0, 5, (2, 300), generator=torch.Generator().manual_seed(1))
    from_dir = GenoSSM.from_pretrained(run / "model").eval()
    from_ckpt = GenoSSM.from_pretrained(run / "checkpoints" / "last.ckpt").eval()
    module = MaskedLMModule(ckpt["hyper_parameters"]["model"])
    module.load_state_dict(ckpt["state_dict"])
    with torch.no_grad():
        reference = module.model.eval()(ids)
        assert torch.equal(from_dir(ids), reference) and torch.equal(from_ckpt(ids), reference)


def test_signal_or_crash_then_resume_is_exact(tmp_path, store, monkeypatch):
    # validation after steps 4, 8 and the last, 9 (logged 0-based); periodic checkpoints after 3, 6, 9
    config = tiny_config(store, trainer={"max_steps": 9, "accumulate_grad_batches": 2, "val_every_n_steps": 4,
                                        "checkpoint_every_n_steps": 3})
    straight = train(config, run_dir=tmp_path / "straight")
    expected, expected_val = train_losses(metrics(straight)), val_loss_by_step(metrics(straight))
    assert sorted(expected_val) == [3, 7, 8]
    best_step = min(expected_val, key=expected_val.get) + 1
    assert best_step == 9 and step_of(straight / "checkpoints" / "best.ckpt") == 9  # the final validation counts
    assert best_score(straight) == pytest.approx(min(expected_val.values()))
    final = load_file(straight / "model" / "model.safetensors")
    original = MaskedLMModule.training_step

    def interrupt_at(micro_batch, action):
        def step(self, batch, batch_idx):
            if batch_idx == micro_batch:
                action()
            return original(self, batch, batch_idx)
        monkeypatch.setattr(MaskedLMModule, "training_step", step)

    def crash():
        raise RuntimeError("simulated crash")

    # SIGTERM at the first micro-batch of step 5: the checkpoint waits for the step's end
    interrupt_at(8, lambda: os.kill(os.getpid(), signal.SIGTERM))
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM after step 5"):
        train(config, run_dir=tmp_path / "signal")
    assert signal.getsignal(signal.SIGTERM) == handler_before
    # SIGTERM in step 4, which validates: the checkpoint is written again after the validation
    interrupt_at(6, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM after step 4"):
        train(config, run_dir=tmp_path / "validating")
    assert best_score(tmp_path / "validating") == val_loss_by_step(metrics(tmp_path / "validating"))[3]
    # a crash in step 6 leaves the periodic checkpoint of step 3
    interrupt_at(10, crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, run_dir=tmp_path / "crash")
    monkeypatch.setattr(MaskedLMModule, "training_step", original)

    for name, saved_step in (("signal", 5), ("validating", 4), ("crash", 3)):
        cut = tmp_path / name
        assert step_of(cut / "checkpoints" / "last.ckpt") == saved_step
        assert not (cut / "model").exists()
        with pytest.raises(GenossmError, match="pass --resume"):
            train(config, run_dir=cut)
        train(config, run_dir=cut, resume=True)
        resumed = train_losses(metrics(cut, 1))
        assert min(resumed) == saved_step  # continues at the checkpoint's step (logged 0-based)
        assert {**train_losses(metrics(cut, 0)), **resumed} == expected  # same batches, masks, weights
        # the validations the straight run made after the checkpoint's step, no more, no fewer
        validated = val_loss_by_step(metrics(cut, 1))
        assert validated == {s: v for s, v in expected_val.items() if s >= saved_step}
        assert {**val_loss_by_step(metrics(cut, 0)), **validated} == expected_val
        assert step_of(cut / "checkpoints" / "best.ckpt") == best_step and best_score(cut) == best_score(straight)
        weights = load_file(cut / "model" / "model.safetensors")
        assert all(torch.equal(final[k], weights[k]) for k in final)


def test_signal_to_the_data_loader_workers_too(tmp_path, store, monkeypatch):
    """SLURM signals every process of a job step, as `kill -TERM -PGID` does: workers leave it to the main process."""
    config = tiny_config(store, data={"num_workers": 2},
                         trainer={"max_steps": 4, "val_every_n_steps": 2, "checkpoint_every_n_steps": 10})
    original = MaskedLMModule.training_step

    def step(self, batch, batch_idx):
        if batch_idx == 2:  # step 3: the training and the validation loaders' workers are up
            workers = multiprocessing.active_children()
            assert len(workers) >= 2
            for pid in (os.getpid(), *(w.pid for w in workers)):
                os.kill(pid, signal.SIGTERM)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(MaskedLMModule, "training_step", step)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM after step 3"):
        train(config, run_dir=run)
    monkeypatch.setattr(MaskedLMModule, "training_step", original)
    assert step_of(run / "checkpoints" / "last.ckpt") == 3
    train(config, run_dir=run, resume=True)
    assert step_of(run / "checkpoints" / "last.ckpt") == 4 and sorted(train_losses(metrics(run, 1))) == [3]


def test_extending_a_finished_run_continues_its_step_count(tmp_path, store):
    # the last step, 5, validates off the val_every_n_steps grid
    run = train(tiny_config(store, trainer={"max_steps": 5, "val_every_n_steps": 2}), run_dir=tmp_path / "run")
    assert step_of(run / "checkpoints" / "last.ckpt") == 5 and sorted(val_loss_by_step(metrics(run, 0))) == [1, 3, 4]
    train(tiny_config(store, trainer={"max_steps": 7, "val_every_n_steps": 2}), run_dir=run, resume=True)
    assert sorted(train_losses(metrics(run, 1))) == [5, 6]  # logged 0-based: the 6th and 7th steps
    assert sorted(val_loss_by_step(metrics(run, 1))) == [5, 6]
    assert step_of(run / "checkpoints" / "last.ckpt") == 7


def test_reads_store_trains_without_validation(tmp_path, shared_data):
    pytest.importorskip("pysam")
    reads = build_store([shared_data / "celegans_reads" / "ce_1000.bam"], tmp_path / "reads.store", progress=False)
    assert reads.is_reads and not reads.heldout("val")
    run = train(tiny_config(reads.path, trainer={"max_steps": 4}), run_dir=tmp_path / "run")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # no val split: no best
    assert len(train_losses(metrics(run))) == 4 and (run / "model" / "model.safetensors").is_file()


def test_held_out_windows_need_a_base(tmp_path):
    rng = np.random.default_rng(0)
    bases = "".join("ACGT"[i] for i in rng.integers(0, 4, 2500))
    heldout = {"val": [("c", 2500, 3000)]}  # two validation windows
    gap = create_store(tmp_path / "gap.store", [("c", bases + "N" * 500)], heldout=heldout)
    with pytest.raises(GenossmError, match="held-out \"val\" windows have no A/C/G/T base"):
        train(tiny_config(gap.path), run_dir=tmp_path / "gap")
    # a single base among Ns: the masking selects it at every validation
    lone = create_store(tmp_path / "lone.store", [("c", bases + "N" * 250 + "A" + "N" * 249)], heldout=heldout)
    run = train(tiny_config(lone.path, trainer={"max_steps": 2, "val_every_n_steps": 1}), run_dir=tmp_path / "lone")
    assert [r["val_bases"] for r in val_losses(metrics(run)).values()] == [1, 1]


def test_masking_selects_a_base_in_every_row_that_has_one():
    ids = torch.randint(0, 4, (3, 64), generator=torch.Generator().manual_seed(0))
    eligible = torch.zeros(3, 64, dtype=torch.bool)
    eligible[1, 10] = True
    eligible[2] = True
    for seed in range(20):
        _, selected = mask_tokens(ids, eligible, [seed, seed, seed], MaskingConfig())
        assert not selected[0].any() and selected[1].tolist() == eligible[1].tolist()
        assert 1 <= int(selected[2].sum()) < 64


def test_run_directory_guards(tmp_path, store):
    config = tiny_config(store)
    with pytest.raises(GenossmError, match="no run directory"):
        train(config)
    with pytest.raises(GenossmError, match="nothing to resume"):
        train(config, run_dir=tmp_path / "new", resume=True)


@pytest.fixture
def compile_calls(monkeypatch):
    """Records GenoSSM.compile_blocks calls; compiles with Dynamo's eager backend (Inductor takes minutes on CPU)."""
    calls, original = [], GenoSSM.compile_blocks
    torch.compiler.reset()  # Dynamo's cache is per process: no graphs from other tests, none left for them

    def record(self, **options):
        calls.append(options)
        return original(self, backend="eager")
    monkeypatch.setattr(GenoSSM, "compile_blocks", record)
    yield calls
    torch.compiler.reset()


@pytest.mark.parametrize("setting", ["auto", False])
def test_compile_off_on_cpu(tmp_path, store, compile_calls, setting):
    train(tiny_config(store, trainer={"compile": setting, "max_steps": 1}), run_dir=tmp_path / "run")
    assert compile_calls == []  # auto compiles on CUDA only


def test_compiled_run_checkpoints_plain_names_and_resumes(tmp_path, store, compile_calls):
    config = tiny_config(store, trainer={"compile": True, "max_steps": 2, "val_every_n_steps": 2,
                                        "checkpoint_every_n_steps": 2})
    run = train(config, run_dir=tmp_path / "run")
    assert compile_calls == [{}]
    plain = [f"model.{k}" for k in GenoSSM(config.model).state_dict()]
    assert list(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]) == plain
    assert sorted(load_file(run / "model" / "model.safetensors")) == sorted(k[len("model."):] for k in plain)
    config.trainer.max_steps = 3
    train(config, run_dir=run, resume=True)
    assert compile_calls == [{}, {}]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert len(train_losses(metrics(run, 1))) == 1  # one more step, from the compiled run's checkpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_under_srun_environment(tmp_path, store):
    """Two ranks started the way `srun --ntasks=2` starts them (SLURM variables, no launcher)."""
    config = tiny_config(store, data={"val_batch_size": 1},  # 5 validation windows: 3 steps on each rank
                         trainer={"max_steps": 3, "val_every_n_steps": 2, "checkpoint_every_n_steps": 2})
    save_config(config, tmp_path / "cfg.yaml")
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(SLURM_NTASKS="2", SLURM_NNODES="1", SLURM_NODEID="0", SLURM_JOB_ID="4242",
               SLURM_JOB_NAME="genossm-ddp-test", SLURM_NODELIST="127.0.0.1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(free_port()), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "ddp.py"), str(tmp_path / "cfg.yaml"), str(tmp_path)],
                              env={**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # gradients were averaged across ranks
    run = tmp_path / "run"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    assert all(torch.equal(ckpt["state_dict"][f"model.{k}"], v) for k, v in rank0.items())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    # validation counted every held-out base once across the two ranks (padding scores nothing)
    single = GenomeDataModule(config.data, seed=config.seed)
    single.setup()
    expected = sum(int(mask_tokens(b["input_ids"].long(), (b["input_ids"] < N) & b["loss_mask"], b["seed"],
                                   config.masking)[1].sum()) for b in single.val_dataloader())
    assert [r["val_bases"] for r in val_losses(metrics(run)).values()] == [expected, expected]


@pytest.mark.slow
def test_cli_sigterm_writes_checkpoint_and_resumes(tmp_path, store):
    config = tiny_config(store, trainer={"max_steps": 100_000, "checkpoint_every_n_steps": 2,
                                         "val_every_n_steps": 1000, "progress_bar": True})
    save_config(config, tmp_path / "cfg.yaml")
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*CLI, "-c", str(tmp_path / "cfg.yaml"), "-o", str(run)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.ckpt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == ""
    assert "stopped by SIGTERM after step" in err and "--resume" in err
    step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert step >= 2

    resumed = subprocess.run([*CLI, "-o", str(run), "--resume", f"trainer.max_steps={step + 3}"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout == "" and "resuming with changed settings: trainer.max_steps" in resumed.stderr
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step + 3
    assert min(train_losses(metrics(run, 1))) == step and (run / "model" / "model.safetensors").is_file()
