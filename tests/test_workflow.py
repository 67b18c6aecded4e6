"""The Snakemake workflow without running jobs: lint, formatting, config validation, and dry runs
of the demo, of a config with several genomes/models/sets, and of the SLURM profile."""

import shutil
import subprocess

import pytest
import yaml

from workflow_helpers import BIN, REPO, copy_workflow, env, job_blocks, job_counts, snakemake

DEMO_JOBS = {
    "preprocess": 1, "preprocess_reads": 1, "train": 1, "predict": 1, "embed": 1,
    "report_training": 1, "report_variants": 1, "report_regions": 1, "all": 1,
}


@pytest.fixture
def workdir(tmp_path):
    return copy_workflow(tmp_path / "wf")


def write_config(workdir, name, data):
    path = workdir / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return name


def by_rule(jobs, rule):
    return [j for j in jobs if j["rule"] == rule]


def test_lint(workdir):
    out = snakemake(workdir, "--lint").stdout
    assert "Congratulations, your workflow is in a good condition!" in out, out


def test_snakefmt_check():
    if shutil.which("shfmt", path=str(BIN)) is None and shutil.which("shfmt") is None:
        pytest.fail("shfmt is missing: snakefmt >= 2 formats shell blocks with it (pip package shfmt-py)")
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflows"], cwd=REPO, env=env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_demo_dry_run_lists_the_whole_chain(workdir):
    out = snakemake(workdir, "-n", "-p").stdout
    assert job_counts(out) == DEMO_JOBS
    jobs = job_blocks(out)
    train = by_rule(jobs, "train")[0]
    assert train["resources"]["gpu"] == "0" and train["resources"]["mpi"] == ""  # CPU demo, no srun
    assert "genossm train --config workflows/config/train/demo.yaml -o results/models/demo_tiny" in train["shell"]
    assert "data.store=\"results/stores/genomes/demo\"" in train["shell"]
    assert "trainer.accelerator=\"cpu\"" in train["shell"]
    predict = by_rule(jobs, "predict")[0]
    assert "-r results/stores/genomes/demo -v data/demo_variants.vcf.gz" in predict["shell"]
    assert "--device cpu" in predict["shell"] and predict["resources"]["gpu"] == "0"
    report = by_rule(jobs, "report_variants")[0]
    assert "--labels data/demo_variants.vcf.gz --label-flag MOTIF" in report["shell"]
    assert all(j["resources"].get("mem_mb") for j in jobs if j["rule"] != "all")


def test_several_genomes_models_and_a_sample_sheet(workdir):
    (workdir / "sheet.tsv").write_text(
        "kind\tname\tpath\tgenome\toptions\tlabel_flag\tmodels\n"
        "variants\tmore\tdata/demo_variants.vcf.gz\tsecond\t\t\tsecond_tiny\n"
        "regions\tmore_regions\tdata/demo_regions.bed\tdemo\t\t\tdemo_tiny,reads_tiny\n"
    )
    demo_train = "workflows/config/train/demo.yaml"
    extra = write_config(workdir, "extra.yaml", {
        "genomes": {"second": {"path": "data/demo_genome.fa.gz", "options": "--topology circular"}},
        "models": {
            "second_tiny": {"genome": "second", "config": demo_train, "overrides": {"trainer.max_steps": 10}},
            "reads_tiny": {"reads": "demo_reads", "config": demo_train},
        },
        "sample_sheet": "sheet.tsv",
    })
    out = snakemake(workdir, "-n", "-p", "--configfile", "workflows/config/config.yaml", extra).stdout
    assert job_counts(out) == {
        "preprocess": 2, "preprocess_reads": 1, "train": 3,
        "predict": 4,  # demo set x 3 models + "more" x second_tiny
        "embed": 5,  # demo regions x 3 models + "more_regions" x 2 models
        "report_training": 3, "report_variants": 4, "report_regions": 5, "all": 1,
    }
    jobs = job_blocks(out)
    trains = {j["wildcards"]: j["shell"] for j in by_rule(jobs, "train")}
    assert "trainer.max_steps=10" in trains["model=second_tiny"]
    assert "data.store=\"results/stores/genomes/second\"" in trains["model=second_tiny"]
    assert "data.store=\"results/stores/reads/demo_reads\"" in trains["model=reads_tiny"]
    more = [j for j in by_rule(jobs, "predict") if "vset=more" in j["wildcards"]]
    assert len(more) == 1 and "-r results/stores/genomes/second" in more[0]["shell"]
    # the sheet's variant set has no labels: its report draws no ROC
    reports = {j["wildcards"]: j["shell"] for j in by_rule(jobs, "report_variants")}
    assert "--labels" not in reports["model=second_tiny, vset=more"]


@pytest.mark.parametrize(
    "config, sheet, message",
    [
        ({"no_such_key": 1}, None, "Additional properties are not allowed ('no_such_key' was unexpected)"),
        ({"variants": {"x": {"path": "x.vcf", "genome": "nope"}}}, None, "variants 'x': unknown genome 'nope'"),
        ({"models": {"m": {"genome": "demo", "reads": "demo_reads", "config": "c.yaml"}}}, None,
         "is valid under each of"),
        ({"sample_sheet": "sheet.tsv"}, "kind\tname\tpath\nvcf\tv\tx.vcf\n", "sheet.tsv: line 2: kind 'vcf'"),
        ({"sample_sheet": "sheet.tsv"}, "kind\tname\tpath\nregions\tr\tx.bed\n",
         "sheet.tsv: line 2: regions rows need a genome"),
        ({"sample_sheet": "sheet.tsv"}, "kind\tname\tpath\tmodels\ngenome\tg\tx.fa\tm\n",
         "sheet.tsv: line 2: genome rows take no models"),
        ({"sample_sheet": "missing.tsv"}, None, "missing.tsv: sample sheet not found"),
    ],
)
def test_bad_config_fails_at_parse_time_with_a_clear_message(workdir, config, sheet, message):
    if sheet is not None:
        (workdir / "sheet.tsv").write_text(sheet)
    extra = write_config(workdir, "extra.yaml", config)
    proc = snakemake(workdir, "-n", "--configfile", "workflows/config/config.yaml", extra, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]


def test_slurm_profile_demo_requests_no_gpus(workdir):
    jobs = job_blocks(snakemake(workdir, "-n", "-p", "--profile", "workflows/profiles/slurm").stdout)
    train = by_rule(jobs, "train")[0]["resources"]
    assert train["gpu"] == "0" and train["gres"] == "" and train["gpu_model"] == ""
    assert (train["slurm_partition"], train["cpus_per_gpu"], train["runtime"]) == ("EDIT-gpu-partition", "8", "2880")
    assert train["slurm_extra"] == "--signal=USR1@300"
    pre = by_rule(jobs, "preprocess")[0]["resources"]
    assert (pre["slurm_partition"], pre["slurm_account"]) == ("EDIT-cpu-partition", "EDIT-account")
    assert pre["mem_mb"] == "16000"


@pytest.mark.parametrize("devices, nodes", [(4, 2), (2, 1), (1, 2), (1, 1)])
def test_slurm_profile_gpu_requests_match_lightning(workdir, devices, nodes):
    extra = write_config(workdir, "gpu.yaml", {"gpu": {"enabled": True, "model": "a100", "train_devices": devices,
                                                       "train_nodes": nodes}})
    out = snakemake(workdir, "-n", "-p", "--profile", "workflows/profiles/slurm",
                    "--configfile", "workflows/config/config.yaml", extra).stdout
    jobs = job_blocks(out)
    train = by_rule(jobs, "train")[0]
    res, shell = train["resources"], train["shell"]
    assert f"trainer.devices={devices}" in shell and f"trainer.num_nodes={nodes}" in shell
    assert "trainer.accelerator=\"gpu\"" in shell
    assert res["nodes"] == str(nodes)
    if nodes == 1:  # --gpus=a100:<devices>, a job total
        assert (res["gpu"], res["gpu_model"], res["gres"]) == (str(devices), "a100", "")
    else:  # --gres=gpu:a100:<devices>, per node
        assert (res["gpu"], res["gpu_model"], res["gres"]) == ("0", "", f"gpu:a100:{devices}")
    # one srun task per GPU, a single one too (SIGUSR1 reaches job steps only); tasks never per GPU
    assert f"srun --nodes={nodes} --ntasks-per-node={devices}" in shell and res["tasks_per_gpu"] == "0"
    if devices * nodes > 1:
        assert res["mpi"] == "srun"
        assert (res["tasks_per_node"], res["tasks"]) == ((str(devices), "0") if devices > 1 else ("0", str(nodes)))
    else:  # the executor's MPI mode refuses one task; the key alone keeps it from adding srun -n1
        assert res["mpi"] == ""
    for rule in ("predict", "embed"):
        job = by_rule(jobs, rule)[0]
        assert (job["resources"]["gpu"], job["resources"]["gpu_model"]) == ("1", "a100")
        assert "--device cuda" in job["shell"]


def test_default_profile_dry_run(workdir):
    out = snakemake(workdir, "-n", "--profile", "workflows/profiles/default").stdout
    assert job_counts(out) == DEMO_JOBS


def test_own_config_replaces_the_demo_and_gets_defaults(workdir):
    """A minimal user config (no options, no overrides, no resources) without the demo entries."""
    own = write_config(workdir, "own.yaml", {
        "genomes": {"g": {"path": "data/demo_genome.fa.gz"}},
        "models": {"m": {"genome": "g", "config": "workflows/config/train/demo.yaml"}},
        "variants": {"v": {"path": "data/demo_variants.vcf.gz", "genome": "g"}},
    })
    out = snakemake(workdir, "-n", "-p", "--configfile", own, "--replace-workflow-config").stdout
    assert job_counts(out) == {"preprocess": 1, "train": 1, "predict": 1, "report_training": 1,
                               "report_variants": 1, "all": 1}
    jobs = job_blocks(out)
    assert by_rule(jobs, "train")[0]["resources"]["mem_mb"] == "4000"  # the schema's default
    shell = by_rule(jobs, "preprocess")[0]["shell"]
    assert "genossm preprocess data/demo_genome.fa.gz -o results/stores/genomes/g  2>" in shell


def test_example_sample_sheet(workdir):
    extra = write_config(workdir, "extra.yaml", {"sample_sheet": "workflows/config/samples.example.tsv"})
    out = snakemake(workdir, "-n", "-p", "--configfile", "workflows/config/config.yaml", extra).stdout
    counts = job_counts(out)
    assert (counts["preprocess"], counts["preprocess_reads"], counts["predict"], counts["embed"]) == (2, 2, 2, 2)
    jobs = job_blocks(out)
    pre = {j["wildcards"]: j["shell"] for j in by_rule(jobs, "preprocess")}
    assert "--topology circular --holdout-fraction 0.1" in pre["genome=demo_circular"]
    predict = [j["shell"] for j in by_rule(jobs, "predict") if "vset=demo_on_circular" in j["wildcards"]]
    assert len(predict) == 1 and "-r results/stores/genomes/demo_circular" in predict[0]
