"""Training runs end to end on CPU: loss goes down, exact resume after a signal, export, DDP."""

import csv
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import DDP_SCRIPT, make_store, one_thread, tiny_config  # noqa: F401 (fixture)

from genossm.errors import GenossmError
from genossm.model import GenoSSM
from genossm.store import build_store
from genossm.train import train
from genossm.train.callbacks import TrainingInterrupted
from genossm.train.config import save_config
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
    config = tiny_config(store, trainer={"max_steps": 8, "accumulate_grad_batches": 2, "val_every_n_steps": 4,
                                        "checkpoint_every_n_steps": 3})
    straight = train(config, run_dir=tmp_path / "straight")
    expected = train_losses(metrics(straight))
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
    # a crash in step 6 leaves the periodic checkpoint of step 3
    interrupt_at(10, crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, run_dir=tmp_path / "crash")
    monkeypatch.setattr(MaskedLMModule, "training_step", original)

    for name, saved_step in (("signal", 5), ("crash", 3)):
        cut = tmp_path / name
        assert torch.load(cut / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == saved_step
        assert not (cut / "model").exists()
        with pytest.raises(GenossmError, match="pass --resume"):
            train(config, run_dir=cut)
        train(config, run_dir=cut, resume=True)
        resumed = train_losses(metrics(cut, 1))
        assert min(resumed) == saved_step  # continues at the checkpoint's step (logged 0-based)
        assert {**train_losses(metrics(cut, 0)), **resumed} == expected  # same batches, masks, weights
        assert val_losses(metrics(cut, 1))[7]["val_loss"] == val_losses(metrics(straight))[7]["val_loss"]
        weights = load_file(cut / "model" / "model.safetensors")
        assert all(torch.equal(final[k], weights[k]) for k in final)


def test_extending_a_finished_run_continues_its_step_count(tmp_path, store):
    run = train(tiny_config(store, trainer={"max_steps": 4, "val_every_n_steps": 2}), run_dir=tmp_path / "run")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    train(tiny_config(store, trainer={"max_steps": 6, "val_every_n_steps": 2}), run_dir=run, resume=True)
    assert sorted(train_losses(metrics(run, 1))) == [4, 5]  # logged 0-based: the 5th and 6th steps
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_reads_store_trains_without_validation(tmp_path, shared_data):
    pytest.importorskip("pysam")
    reads = build_store([shared_data / "celegans_reads" / "ce_1000.bam"], tmp_path / "reads.store", progress=False)
    assert reads.is_reads and not reads.heldout("val")
    run = train(tiny_config(reads.path, trainer={"max_steps": 4}), run_dir=tmp_path / "run")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # no val split: no best
    assert len(train_losses(metrics(run))) == 4 and (run / "model" / "model.safetensors").is_file()


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
