"""genossm report: ROC AUC against a brute-force count, training logs across resumes, the figures
and tables it writes, and its one-line errors with no output left behind."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genossm.errors import GenossmError
from genossm.report import read_labels, read_training_log, roc_auc, roc_curve, write_report

DEMO_VCF = str(Path(__file__).resolve().parents[1] / "data" / "demo_variants.vcf.gz")
GENOSSM = [sys.executable, "-c", "from genossm.cli import main; main()"]


def brute_force_auc(scores, labels):
    pos, neg = scores[labels], scores[~labels]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    assert roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels), abs=1e-12)


def test_roc_auc_extremes_and_empty_class():
    labels = np.array([0, 0, 1, 1], dtype=bool)
    assert roc_auc([0.1, 0.2, 0.8, 0.9], labels) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], labels) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], labels) == 0.5
    assert np.isnan(roc_auc([1.0, 2.0], [True, True]))


def test_roc_curve_area_equals_auc():
    rng = np.random.default_rng(7)
    labels = rng.random(300) < 0.5
    scores = rng.normal(size=300) + labels * 0.8
    scores[:40] = np.round(scores[:40])  # some ties
    fpr, tpr = roc_curve(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)  # trapezoids: ties count 1/2
    assert area == pytest.approx(roc_auc(scores, labels), abs=1e-12)


def write_metrics(path, steps, loss, val_every=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"step": s, "train_loss": l, "val_loss": np.nan} for s, l in zip(steps, loss)]
    if val_every:
        rows += [{"step": s, "train_loss": np.nan, "val_loss": 1.0} for s in steps if s % val_every == 0]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_training_log_of_a_resumed_run_keeps_the_newest_rows(tmp_path):
    # version_0 logged steps 0..40 but crashed; version_1 resumed from step 30
    write_metrics(tmp_path / "logs/csv/version_0/metrics.csv", range(0, 41, 10), [5, 4, 3, 2, 9])
    write_metrics(tmp_path / "logs/csv/version_1/metrics.csv", range(30, 61, 10), [2, 1.5, 1.2, 1.0])
    df = read_training_log(tmp_path)
    train = df.dropna(subset=["train_loss"])
    assert train["step"].tolist() == [0, 10, 20, 30, 40, 50, 60]
    assert train["train_loss"].tolist() == [5, 4, 3, 2, 1.5, 1.2, 1.0]  # step 40 from version_1


def test_training_log_versions_sort_numerically(tmp_path):
    for v in range(11):  # version_10 sorts after version_9, not after version_1
        write_metrics(tmp_path / f"logs/csv/version_{v}/metrics.csv", [v * 10], [float(v)])
    assert read_training_log(tmp_path)["train_loss"].tolist() == [float(v) for v in range(11)]


def demo_scores(rng):
    """A predict-shaped table over the demo VCF: llr lower for MOTIF variants, one ref_mismatch."""
    import pysam

    rows = []
    with pysam.VariantFile(DEMO_VCF) as vcf:
        for rec in vcf:
            motif = "MOTIF" in rec.info
            rows.append((rec.chrom, rec.pos, rec.ref, rec.alts[0], rec.id, rng.normal(-3 if motif else 0, 1), "ok"))
    df = pd.DataFrame(rows, columns=["chrom", "pos", "ref", "alt", "id", "llr", "status"])
    df.loc[0, ["llr", "status"]] = [np.nan, "ref_mismatch"]
    return df


def test_write_report_draws_every_figure(tmp_path):
    rng = np.random.default_rng(0)
    write_metrics(tmp_path / "run/logs/csv/version_0/metrics.csv", range(0, 200, 10), np.linspace(1.4, 1.1, 20), 50)
    demo_scores(rng).to_parquet(tmp_path / "scores.parquet")
    emb = pd.DataFrame({"chrom": "chr1", "start": range(10), "end": range(1, 11),
                        "name": [f"{'cluster' if i % 2 else 'background'}_{i:02d}" for i in range(10)]})
    for j in range(4):
        emb[f"emb_{j}"] = rng.normal(size=10)
    emb.to_parquet(tmp_path / "emb.parquet")

    files = write_report(tmp_path / "out", metrics=tmp_path / "run", scores=tmp_path / "scores.parquet",
                         labels=DEMO_VCF, embeddings=tmp_path / "emb.parquet")
    names = sorted(f.name for f in files)
    assert names == ["embeddings.png", "index.html", "roc.png", "scores.png", "separation.tsv", "training.png"]
    for f in files:
        if f.suffix == ".png":
            assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5_000
    sep = pd.read_csv(tmp_path / "out/separation.tsv", sep="\t")
    assert sep["score"].tolist() == ["llr"]
    assert (sep["n_pos"][0], sep["n_neg"][0]) == (181, 181)  # 363 variants, the ref_mismatch left out
    assert sep["direction"][0] == "lower" and sep["separation_auc"][0] > 0.9
    html = (tmp_path / "out/index.html").read_text()
    assert all(f"src='{n}'" in html for n in names if n.endswith(".png"))


def test_labels_from_a_table(tmp_path):
    pd.DataFrame({"chrom": ["c", "c"], "pos": [5, 9], "ref": ["A", "C"], "alt": ["G", "T"],
                  "label": ["true", "0"]}).to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    assert read_labels(tmp_path / "labels.tsv")["label"].tolist() == [True, False]
    pd.DataFrame({"chrom": ["c"], "pos": [5], "ref": ["A"], "alt": ["G"], "label": ["maybe"]}).to_csv(
        tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(GenossmError, match="bad.tsv: row 1: label 'maybe'"):
        read_labels(tmp_path / "bad.tsv")


@pytest.mark.parametrize(
    "case, message",
    [
        ("scores_without_columns", "missing columns"),
        ("labels_match_nothing", "no scored variant matches"),
        ("unknown_flag", "INFO field 'NOPE' is not declared"),
        ("metrics_without_step", "no 'step' column"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, case, message):
    rng = np.random.default_rng(1)
    scores = tmp_path / "scores.parquet"
    demo_scores(rng).to_parquet(scores)
    args = ["--scores", str(scores), "--labels", DEMO_VCF]
    if case == "scores_without_columns":
        pd.DataFrame({"x": [1.0]}).to_parquet(scores)
    elif case == "labels_match_nothing":
        df = demo_scores(rng).assign(chrom="other")
        df.to_parquet(scores)
    elif case == "unknown_flag":
        args += ["--label-flag", "NOPE"]
    else:
        (tmp_path / "metrics.csv").write_text("epoch,train_loss\n0,1.0\n")
        args = ["--metrics", str(tmp_path / "metrics.csv")]
    out = tmp_path / "out"
    proc = subprocess.run([*GENOSSM, "report", *args, "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_separation_is_oriented_by_the_score_definition(tmp_path):
    rng = np.random.default_rng(3)
    df = demo_scores(rng)
    motif = df["llr"] < -1.5  # roughly the MOTIF rows (demo_scores puts them lower)
    df["llr"] = -df["llr"]  # a model that gets it backwards: motif variants now score higher
    df["my_score"] = rng.normal(size=len(df)) + motif * 2.0
    df.to_parquet(tmp_path / "scores.parquet")
    write_report(tmp_path / "out", scores=tmp_path / "scores.parquet", labels=DEMO_VCF)
    sep = pd.read_csv(tmp_path / "out/separation.tsv", sep="\t").set_index("score")
    # llr is defined "lower = disruptive": the backwards model is below chance, not flipped
    assert sep.loc["llr", "direction"] == "lower" and sep.loc["llr", "direction_from"] == "definition"
    assert sep.loc["llr", "separation_auc"] < 0.1
    # an unknown score is oriented by the data, and says so
    assert sep.loc["my_score", "direction_from"] == "data" and sep.loc["my_score", "direction"] == "higher"
    assert sep.loc["my_score", "separation_auc"] > 0.8
