"""Running the Snakemake workflow from tests: a private copy of the workflow per test, snakemake
from this interpreter's environment (so `genossm` and `shfmt` are on PATH), and parsers for what
a dry run prints."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_FILES = ("Snakefile", "workflows", "data")
PREDICTIONS = "results/predict/demo_tiny/demo.parquet"
EMBEDDINGS = "results/embed/demo_tiny/demo.parquet"


def env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def copy_workflow(dest: Path) -> Path:
    """Snakefile, workflows/ and data/ copied into ``dest``: a clean working directory."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def snakemake(workdir, *args, check=True, timeout=900) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` in ``workdir``; stdout and stderr together in ``.stdout``."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--nolock", *args],
        cwd=workdir, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc


def job_counts(output: str) -> dict:
    """The 'Job stats' table of a (dry) run: {rule: count}, without the total."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def job_blocks(output: str) -> list[dict]:
    """Each job a dry run lists: {'rule', 'wildcards', 'resources' (dict of str), 'shell'}."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]*\d{4}\]\n)", output):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not m:
            continue
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        resources = dict(item.split("=", 1) for item in res.group(1).split(", ")) if res else {}
        shell = block.split("Shell command:", 1)[1] if "Shell command:" in block else ""
        jobs.append({"rule": m.group(1), "wildcards": wc.group(1) if wc else "", "resources": resources,
                     "shell": shell})
    return jobs


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The demo pipeline run once, as a user runs it: `snakemake --cores 2` in a fresh copy of the
    workflow (no profile, CPU), then `snakemake --report`. Shared by all pytest-xdist workers of
    the session through a file lock (the pattern the pytest-xdist docs give for session
    fixtures); tests must not change it (copy it first)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by all workers of this session
    run, result = base / "demo-run", base / "demo-run.json"
    with FileLock(str(base / "demo-run.lock")):
        if not result.exists():
            copy_workflow(run)
            proc = snakemake(run, "--cores", "2", check=False)
            outcome = {"rc": proc.returncode, "output": proc.stdout[-8000:], "run": proc.stdout}
            if proc.returncode == 0:
                report = snakemake(run, "--report", "results/report.html", check=False)
                outcome.update(rc=report.returncode, output=report.stdout[-8000:])
            result.write_text(json.dumps(outcome))
    outcome = json.loads(result.read_text())
    if outcome["rc"] != 0:
        pytest.fail(f"the demo pipeline failed (exit {outcome['rc']}):\n{outcome['output']}")
    return run


def demo_run_output(run) -> str:
    """What `snakemake --cores 2` printed for the shared demo run."""
    return json.loads((run.parent / "demo-run.json").read_text())["run"]
