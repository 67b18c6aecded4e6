"""Held-out masked-base prediction: which bases are scored (each once, held-out only), the run on a
store and on real genomes (E. coli CLI smoke run, eukaryote slices), and bad input."""

import gzip
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from train_helpers import HELDOUT, make_store, one_thread  # noqa: F401 (fixture)

from genossm.cli import main
from genossm.errors import GenossmError
from genossm.evaluate import HeldoutConfig, run_heldout
from genossm.evaluate.heldout import evenly_spaced_blocks
from genossm.evaluate.masked import masked_passes, score_windows
from genossm.model import GenoSSM, GenoSSMConfig
from genossm.store import TokenStore
from genossm.tokenize import MASK, PAD
from genossm.train.windows import Layout, validation_windows

CLI = [sys.executable, "-c", "from genossm.cli import main; main()", "evaluate", "heldout", "--threads", "1",
       "--no-progress"]
TINY = replace(HeldoutConfig.smoke(), windows=(64, 256), steps=3, batch_bases=512, d_model=8, eval_bases=None,
               markov_max_order=4, markov_val_positions=5000)
N_RUN = ("chr1", 9100, 9150)  # inside the held-out region chr1:9000-9400


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("evaluate") / "genome.store", n_run=N_RUN)


def heldout_bases(store, split="val"):
    """{(contig, position)} of the A/C/G/T bases of a split's regions."""
    out = set()
    for name, start, end in store.heldout(split):
        ids = store.window(name, start, end)[0]
        out |= {(name, start + int(i)) for i in np.flatnonzero(ids < 4)}
    return out


def test_evenly_spaced_blocks():
    regions = [("a", 100, 1100), ("b", 0, 200), ("c", 50, 850)]
    assert evenly_spaced_blocks(regions) == regions
    assert evenly_spaced_blocks(regions, 5000) == regions
    blocks = evenly_spaced_blocks(regions, 400)
    assert len(blocks) == 8 and blocks == evenly_spaced_blocks(regions, 400)
    assert [b[0] for b in blocks] == ["a"] * 4 + ["b"] + ["c"] * 3  # spread over all 2,000 bases
    for name, start, end in blocks:
        r = next(r for r in regions if r[0] == name)
        assert r[1] <= start < end <= r[2] and end - start <= 50


@pytest.mark.parametrize("window", [64, 1000, 20_000])  # shorter than regions, longer, longer than contigs
def test_every_heldout_base_is_masked_exactly_once(store, window):
    layout = Layout.from_store(store)
    found = []
    for w in validation_windows(layout, window, "val"):
        name, length = layout.names[w.contig], int(layout.lengths[w.contig])
        genome = store.window(name, w.start, w.start + w.length)[0]
        for ids, positions in masked_passes(store, layout.names, [w], window, stride=16):
            assert np.array_equal(ids[: w.length], genome) and np.all(ids[w.length :] == PAD)
            assert np.all(np.diff(positions) >= 16) and np.all(ids[positions] < 4)
            assert np.all((w.score_start <= positions) & (positions < w.score_end))
            contig_positions = w.start + positions
            if store.topology(name) == "circular":
                contig_positions %= length
            found += [(name, int(p)) for p in contig_positions]
    assert len(found) == len(set(found))
    assert set(found) == heldout_bases(store)
    assert not {(N_RUN[0], p) for p in range(N_RUN[1], N_RUN[2])} & set(found)  # N is never a target


def test_scoring_masks_the_targets_and_counts_each_once(store, one_thread):
    layout = Layout.from_store(store)
    torch.manual_seed(0)
    model = GenoSSM(GenoSSMConfig(d_model=8, n_layer=1)).eval()
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].clone()))
    windows = validation_windows(layout, 256, "val")
    score = score_windows(model, store, layout.names, windows, 256, 16, device=torch.device("cpu"),
                          tokens_per_batch=256 * 5, progress=False)
    assert score.count == len(heldout_bases(store)) and 0 <= score.accuracy <= 1
    assert all(x.shape[0] <= 5 for x in calls)
    masked = sum(int((x == MASK).sum()) for x in calls)
    assert masked == score.count
    assert score.bits_per_base == pytest.approx(2.0, abs=0.2)  # an untrained model is near uniform


def test_run_on_a_store_split(store, one_thread, tmp_path):
    result = run_heldout([store.path], TINY, work_dir=tmp_path / "work", split="val", device="cpu", progress=False)
    json.dumps(result)
    g, b = result["genome"], result["baselines"]
    scored = len(heldout_bases(store))
    assert g["heldout_regions"] == len(HELDOUT["val"]) and g["scored_bases"] == scored
    assert b["gc_content"]["scored_bases"] == b["markov"]["scored_bases"] == scored
    assert [m["window"] for m in result["models"]] == [64, 256]
    assert all(m["scored_bases"] == scored and m["training_bases"] == 3 * 512 for m in result["models"])
    assert [m["batch_size"] for m in result["models"]] == [8, 2]
    # the genome is made of repeated motifs: a Markov model predicts it far better than GC content
    assert b["markov"]["bits_per_base"] < b["gc_content"]["bits_per_base"] - 0.5
    assert b["markov"]["order"] >= 2 and len(b["markov"]["selection"]) == 5 * len(TINY.markov_betas)
    assert (tmp_path / "work" / "runs" / "window_256" / "model" / "model.safetensors").is_file()
    with pytest.raises(GenossmError, match="not empty"):
        run_heldout([store.path], TINY, work_dir=tmp_path / "work", split="val", device="cpu", progress=False)
    with pytest.raises(GenossmError, match="divide batch_bases"):
        run_heldout([store.path], replace(TINY, windows=(100,)), split="val", device="cpu", progress=False)


def test_store_without_the_split(tmp_path):
    from genossm.store import create_store

    plain = create_store(tmp_path / "plain.store", [("c", "ACGT" * 100)])
    with pytest.raises(GenossmError, match="no held-out regions in split 'test'"):
        run_heldout([plain.path], replace(TINY, windows=()), device="cpu", progress=False)


def test_cli_smoke_run_on_ecoli(shared_data, tmp_path):
    fasta = shared_data / "ecoli" / "GCF_000005845.2_ASM584v2_genomic.fna.gz"
    out, work = tmp_path / "heldout.json", tmp_path / "work"
    done = subprocess.run([*CLI, "--smoke", "--topology", "circular", "-w", str(work), "-o", str(out), str(fasta)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["evaluation"] == "heldout" and record["smoke"] is True and record["device"].startswith("CPU")
    g, b = record["genome"], record["baselines"]
    assert g["bases"] == 4_641_652 and g["heldout_bases"] == 464_165 and g["scored_bases"] == 2048
    assert b["gc_content"]["gc_fraction"] == pytest.approx(0.508, abs=0.001)
    assert b["gc_content"]["bits_per_base"] == pytest.approx(2.0, abs=0.01)
    assert b["markov"]["bits_per_base"] < b["gc_content"]["bits_per_base"]
    assert [m["window"] for m in record["models"]] == [128, 512]
    for m in record["models"]:
        assert m["scored_bases"] == 2048 and 0 < m["bits_per_base"] < 4 and m["batch_size"] * m["window"] == 2048
    store = TokenStore.open(work / "genome.store")
    assert store.heldout("test") == [("NC_000913.3", 4_641_652 - 464_165, 4_641_652)]
    assert store.topology("NC_000913.3") == "circular"
    assert "Markov order" in done.stdout and "GC content only" in done.stdout


def test_eukaryote_slices_baselines(shared_data, tmp_path, one_thread):
    """Baselines only (no window lengths) on a multi-contig eukaryote slice with N runs."""
    fasta = shared_data / "eukaryote_slices" / "D.melanogaster.fa.gz"
    out = tmp_path / "dmel.json"
    done = evaluate("--smoke", "--windows", "", "--markov-max-order", "6", "-o", out, fasta)
    assert done.exit_code == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    contigs, expected = 0, 0  # A/C/G/T in the last 10% of every contig, counted straight from the FASTA
    for chunk in gzip.open(fasta, "rt").read().split(">")[1:]:
        seq = "".join(chunk.splitlines()[1:]).upper()
        tail = seq[len(seq) - round(len(seq) * 0.1):]
        contigs += 1
        expected += sum(tail.count(base) for base in "ACGT")
    g = record["genome"]
    assert g["contigs"] == g["heldout_regions"] == contigs == 7
    assert 0 < g["scored_bases"] <= 2048 and record["models"] == []
    done = evaluate("--windows", "", "--markov-max-order", "4", "--markov-betas", "8", "-o", out, fasta)
    assert done.exit_code == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["genome"]["scored_bases"] == expected < record["genome"]["heldout_bases"]  # Ns are not scored
    assert record["baselines"]["markov"]["bits_per_base"] < record["baselines"]["gc_content"]["bits_per_base"]


def test_cli_bad_input(tmp_path):
    out = tmp_path / "out.json"
    fasta = tmp_path / "g.fa"
    fasta.write_text(">c\nACGT\n")
    done = evaluate("--smoke", "--windows", "300", "-o", out, fasta)
    assert done.exit_code == 2 and not out.exists()
    assert done.stderr.strip().splitlines()[-1].startswith("genossm: error: heldout setting windows: 300 must")
    bad = tmp_path / "bad.fa"
    bad.write_text(">c\nACGTXACGT\n")
    done = evaluate("--smoke", "--windows", "", "-o", out, bad)
    assert done.exit_code == 2 and not out.exists()
    assert "invalid character 'X'" in done.stderr.strip().splitlines()[-1]
    fasta.write_text(">c\n" + "ACGTTGCAAGCT" * 300 + "\n")  # options of genome files given with a store:
    done = evaluate("--smoke", "--windows", "", "-o", out, "-w", tmp_path / "work", fasta)  # refused, not ignored
    assert done.exit_code == 0, done.stderr[-2000:]
    done = evaluate("--smoke", "--windows", "", "--holdout-fraction", "0.2", "-o", out, tmp_path / "work" / "genome.store")
    assert done.exit_code == 2 and "--holdout-fraction: only for genome files" in done.stderr


def evaluate(*args):
    """``genossm evaluate heldout --no-progress ARGS`` in this process."""
    return CliRunner().invoke(main, ["evaluate", "heldout", "--no-progress", *map(str, args)])


def test_runs_without_pysam_biopython_or_snakemake(tmp_path):
    """GPU machines have only torch, triton, lightning, numpy and pandas: FASTA in, JSON out."""
    fasta = tmp_path / "g.fa.gz"
    with gzip.open(fasta, "wt") as f:
        f.write(">c circular\n" + "".join(np.random.default_rng(0).choice(list("ACGT"), 5000)) + "\n")
    code = f"""
import sys
for name in ("pysam", "Bio", "snakemake"):
    sys.modules[name] = None  # any import of them fails
from dataclasses import replace
from genossm.cli import evaluate
from genossm.evaluate import HeldoutConfig, run_heldout
result = run_heldout([{str(fasta)!r}], replace(HeldoutConfig.smoke(), windows=(), markov_max_order=3), device="cpu",
                     progress=False)
assert result["genome"]["scored_bases"] == 500, result["genome"]
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
