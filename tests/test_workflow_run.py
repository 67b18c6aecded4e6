"""The demo pipeline end to end, as a user runs it (the `demo_run` fixture: `snakemake --cores 2`
in a fresh copy of the workflow, no profile, CPU, then `snakemake --report`). Outputs are
checked for content; then reruns: nothing to do after completion, a deleted intermediate reruns
only what depends on it, and failing rules leave no output that Snakemake would take as complete.
Tests that change the run work on a copy.
"""

import shutil

import numpy as np
import pandas as pd
import pysam
import pytest
import torch
import yaml

from workflow_helpers import EMBEDDINGS, PREDICTIONS, demo_run_output, job_counts, snakemake
from workflow_helpers import demo_run  # noqa: F401  (the shared demo run, a fixture)

pytestmark = pytest.mark.slow

MODEL = "results/models/demo_tiny"
N_VARIANTS, N_MOTIF, N_REGIONS = 363, 181, 52


@pytest.fixture
def run_copy(demo_run, tmp_path):
    """A private copy of the finished run (timestamps and .snakemake metadata kept)."""
    dest = tmp_path / "run"
    shutil.copytree(demo_run, dest, symlinks=True)
    return dest


def test_demo_runs_every_job(demo_run):
    assert job_counts(demo_run_output(demo_run)) == {
        "preprocess": 1, "preprocess_reads": 1, "train": 1, "predict": 1, "embed": 1,
        "report_training": 1, "report_variants": 1, "report_regions": 1, "all": 1,
    }


def test_demo_stores(demo_run):
    from genossm.store import TokenStore
    from genossm.tokenize import decode

    store = TokenStore.open(demo_run / "results/stores/genomes/demo")
    assert store.names == ["chr1", "plasmid1"] and not store.is_reads
    assert [store.length(n) for n in store.names] == [1_200_000, 80_000]
    assert store.topology("plasmid1") == "circular"
    assert store.heldout("val")  # --holdout-fraction 0.1 in the demo config
    with pysam.FastaFile(str(demo_run / "data/demo_genome.fa.gz")) as fa:
        for name, start, end in (("chr1", 0, 500), ("chr1", 1_199_500, 1_200_000), ("plasmid1", 79_000, 80_000)):
            ids, _ = store.window(name, start, end)
            assert decode(ids) == fa.fetch(name, start, end).upper()

    reads = TokenStore.open(demo_run / "results/stores/reads/demo_reads")
    with pysam.AlignmentFile(str(demo_run / "data/demo_reads.bam")) as bam:
        kept = [r for r in bam if not (r.is_secondary or r.is_supplementary or r.is_duplicate or r.is_qcfail)
                and r.mapping_quality >= 20]
    assert reads.is_reads and len(reads.names) == len(kept)


def test_demo_model_loads_and_trained_to_the_end(demo_run):
    from genossm.model import GenoSSM
    from genossm.report import read_training_log

    settings = yaml.safe_load((demo_run / "workflows/config/train/demo.yaml").read_text())
    model = GenoSSM.from_pretrained(demo_run / MODEL / "model").eval()
    assert (model.config.d_model, model.config.n_layer) == (settings["model"]["d_model"], settings["model"]["n_layer"])
    ckpt = GenoSSM.from_pretrained(demo_run / MODEL / "checkpoints/last.ckpt").eval()
    ids = torch.randint(0, 4, (1, 257), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids)
        assert logits.shape == (1, 257, model.config.vocab_size)
        assert torch.allclose(logits, ckpt(ids), atol=1e-5)
    log = read_training_log(demo_run / MODEL)
    assert log["step"].max() >= settings["trainer"]["max_steps"] - 1
    assert "val_loss" in log.columns and log["val_loss"].notna().any()


def test_demo_scores_one_per_variant_in_input_order(demo_run):
    scores = pd.read_parquet(demo_run / PREDICTIONS)
    assert {"chrom", "pos", "ref", "alt", "id", "llr", "status"} <= set(scores.columns)
    with pysam.VariantFile(str(demo_run / "data/demo_variants.vcf.gz")) as vcf:
        records = [(r.chrom, r.pos, r.id, r.ref, r.alts[0]) for r in vcf]
    assert len(records) == N_VARIANTS
    assert list(zip(scores["chrom"], scores["pos"], scores["id"], scores["ref"], scores["alt"])) == records
    assert (scores["status"] == "ok").all(), scores["status"].value_counts()
    assert np.isfinite(scores["llr"]).all()


def test_demo_embeddings_one_row_per_region(demo_run):
    from genossm.model import GenoSSM

    emb = pd.read_parquet(demo_run / EMBEDDINGS)
    d = GenoSSM.from_pretrained(demo_run / MODEL / "model").config.d_model
    assert list(emb.columns) == ["chrom", "start", "end", "name"] + [f"emb_{i}" for i in range(d)]
    bed = pd.read_csv(demo_run / "data/demo_regions.bed", sep="\t", header=None)
    assert emb["name"].tolist() == bed[3].tolist() and len(emb) == N_REGIONS
    assert np.isfinite(emb.filter(like="emb_").to_numpy()).all()


def test_demo_report(demo_run):
    report = demo_run / "results/report/demo_tiny"
    for path in ("training/training.png", "variants/demo/scores.png", "variants/demo/roc.png",
                 "regions/demo/embeddings.png"):
        assert (report / path).read_bytes()[:4] == b"\x89PNG", path
    sep = pd.read_csv(report / "variants/demo/separation.tsv", sep="\t").set_index("score")
    assert (sep.loc["llr", "n_pos"], sep.loc["llr", "n_neg"]) == (N_MOTIF, N_VARIANTS - N_MOTIF)
    html = demo_run / "results/report.html"
    assert html.stat().st_size > 100_000
    text = html.read_text(errors="replace")
    assert "Variant scores" in text and "Training" in text and "Region embeddings" in text


def test_rerun_after_completion_does_nothing(demo_run):
    out = snakemake(demo_run, "-n").stdout
    assert "Nothing to be done" in out, out[-3000:]


def test_deleting_an_intermediate_reruns_only_its_dependents(run_copy):
    before = pd.read_parquet(run_copy / PREDICTIONS)
    (run_copy / PREDICTIONS).unlink()
    expected = {"predict": 1, "report_variants": 1, "all": 1}
    assert job_counts(snakemake(run_copy, "-n").stdout) == expected
    assert job_counts(snakemake(run_copy, "--cores", "2").stdout) == expected
    pd.testing.assert_frame_equal(pd.read_parquet(run_copy / PREDICTIONS), before)  # deterministic on CPU
    assert "Nothing to be done" in snakemake(run_copy, "-n").stdout


def test_failed_rules_leave_no_output_snakemake_takes_as_complete(run_copy):
    # a VCF without header (a realistic malformed input) and a training config genossm rejects
    (run_copy / "broken.vcf").write_text("chr1\t100\t.\tA\tG\n")
    (run_copy / "extra.yaml").write_text(yaml.safe_dump({
        "variants": {"broken": {"path": "broken.vcf", "genome": "demo"}},
        "models": {"broken_model": {"genome": "demo", "config": "workflows/config/train/demo.yaml",
                                    "overrides": {"trainer.max_steps": 0}}},
    }))
    configs = ["--configfile", "workflows/config/config.yaml", "extra.yaml"]
    proc = snakemake(run_copy, "--cores", "2", "--keep-going", *configs, check=False)
    assert proc.returncode != 0

    assert not (run_copy / "results/predict/demo_tiny/broken.parquet").exists()
    assert not (run_copy / "results/models/broken_model/model").exists()
    leftovers = [p.name for d in ("results/predict/demo_tiny", "results/models/broken_model") if (run_copy / d).is_dir()
                 for p in (run_copy / d).iterdir() if ".tmp-" in p.name]
    assert leftovers == []
    # each failure is explained in one line in its log
    assert "genossm: error:" in (run_copy / "results/logs/predict/demo_tiny/broken.log").read_text()
    assert "genossm: error:" in (run_copy / "results/logs/train/broken_model.log").read_text()
    # the failed jobs (and everything downstream of them) are still to do; the rest is complete
    todo = job_counts(snakemake(run_copy, "-n", *configs).stdout)
    assert todo == {"train": 1, "predict": 3, "embed": 1, "report_training": 1, "report_variants": 3,
                    "report_regions": 1, "all": 1}


def test_raising_max_steps_resumes_the_finished_training_run(run_copy):
    """The train rule resumes from checkpoints/last.ckpt: more steps continue the same run."""
    settings = yaml.safe_load((run_copy / "workflows/config/train/demo.yaml").read_text())
    more = settings["trainer"]["max_steps"] + 5
    (run_copy / "extra.yaml").write_text(yaml.safe_dump({"models": {"demo_tiny": {
        "overrides": {"trainer.max_steps": more}}}}))
    configs = ["--configfile", "workflows/config/config.yaml", "extra.yaml"]
    out = snakemake(run_copy, "--cores", "2", *configs).stdout
    assert job_counts(out) == {"train": 1, "predict": 1, "embed": 1, "report_training": 1, "report_variants": 1,
                               "report_regions": 1, "all": 1}
    log = (run_copy / "results/logs/train/demo_tiny.log").read_text()
    assert "resuming with changed settings: trainer.max_steps" in log, log[-2000:]
    ckpt = torch.load(run_copy / MODEL / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == more
    steps = pd.read_csv(run_copy / MODEL / "logs/csv/version_1/metrics.csv")["step"]
    assert steps.min() >= settings["trainer"]["max_steps"] - 1  # continued, did not start over
    assert "Nothing to be done" in snakemake(run_copy, "-n", *configs).stdout
