"""Plots and tables that show how a run went: training curves, variant score distributions, how
well scores separate labelled variants (ROC AUC), and a PCA of region embeddings.

Library functions (callable from a notebook) behind ``genossm report``; they read the files the
other commands write:

- a Lightning ``CSVLogger`` ``metrics.csv`` (a ``step`` column; ``train*``/``val*`` loss columns),
- a ``genossm predict`` table (parquet or TSV: chrom, pos, ref, alt, id, score columns, status),
- labels: a VCF whose INFO flag (default ``MOTIF``) marks the positives, or a TSV/parquet with
  columns chrom, pos, ref, alt, label (1/0 or true/false),
- a ``genossm embed`` parquet (chrom, start, end, name, emb_0 .. emb_{d-1}).

Variants are matched between scores and labels on (chrom, pos, ref, alt); pos is the 1-based VCF
POS in both. Figures are drawn with matplotlib's object API (no pyplot state, no display needed).
"""

import html
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from genossm.errors import GenossmError

KEY = ["chrom", "pos", "ref", "alt"]
# predict table columns that are not scores
NON_SCORE = {"chrom", "pos", "ref", "alt", "id", "status", "label"}
# where variants that matter should fall for the scores genossm predict writes: a disruptive
# variant makes the alt allele less likely (llr < 0) and moves the embedding (larger distance)
EXPECTED_DIRECTION = {"llr": "lower", "cosine_distance": "higher"}


# ---------------------------------------------------------------- reading


def read_table(path) -> pd.DataFrame:
    """A table by suffix: .parquet/.pq, .csv (comma-separated), anything else tab-separated."""
    path = Path(path)
    try:
        if path.suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="," if path.suffix == ".csv" else "\t")
    except FileNotFoundError:
        raise GenossmError("no such file", path=path) from None
    except Exception as err:  # pyarrow/pandas parse errors: report them as one line
        raise GenossmError(f"cannot read table: {err}", path=path) from None


def read_training_log(path) -> pd.DataFrame:
    """Lightning CSV metrics: one row per logged step, from a metrics.csv or a training run
    directory (``genossm train -o RUN_DIR``: its ``logs/csv/version_N/metrics.csv``, one per start
    or resume, joined in order; steps a resumed run logs again replace the earlier ones).

    Lightning writes train and val metrics on separate rows (NaN elsewhere); they are kept as is.
    """
    path = Path(path)
    if path.is_dir():
        versions = sorted(path.glob("logs/csv/version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
        if not versions:
            raise GenossmError("no logs/csv/version_*/metrics.csv (expected a genossm train run directory)", path=path)
        # walking from the newest version back: keep an older version's rows only before the
        # first step a newer one logged
        frames, first_newer = [], np.inf
        for v in reversed(versions):
            table = _metrics_table(v)
            frames.append(table[table["step"] < first_newer])
            if len(table):
                first_newer = min(first_newer, table["step"].min())
        df = pd.concat(frames[::-1], ignore_index=True)
    else:
        df = _metrics_table(path)
    if not loss_columns(df):
        raise GenossmError("no loss column (a column whose name contains 'loss')", path=path)
    return df


def _metrics_table(path) -> pd.DataFrame:
    df = read_table(path)
    if "step" not in df.columns:
        raise GenossmError("no 'step' column (expected a Lightning CSVLogger metrics.csv)", path=path)
    return df


def loss_columns(df) -> list[str]:
    return [c for c in df.columns if "loss" in c.lower()]


def score_columns(df) -> list[str]:
    """Numeric columns of a predict table that hold scores."""
    return [c for c in df.columns if c not in NON_SCORE and pd.api.types.is_numeric_dtype(df[c])]


def read_scores(path) -> pd.DataFrame:
    df = read_table(path)
    missing = [c for c in KEY if c not in df.columns]
    if missing:
        raise GenossmError(f"missing columns {missing} (expected a genossm predict table)", path=path)
    if not score_columns(df):
        raise GenossmError("no numeric score column", path=path)
    return df


def read_labels(path, flag: str = "MOTIF") -> pd.DataFrame:
    """Labels as a DataFrame (chrom, pos, ref, alt, label: bool), one row per ALT allele.

    From a VCF/BCF: ``label`` is whether INFO has ``flag``. From a TSV/parquet: its ``label``
    column (1/0, true/false)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".vcf", ".vcf.gz", ".bcf")):
        import pysam

        try:
            vcf = pysam.VariantFile(str(path))
        except (OSError, ValueError) as err:
            raise GenossmError(f"cannot read VCF: {err}", path=path) from None
        with vcf:
            if flag not in vcf.header.info:
                raise GenossmError(f"INFO field {flag!r} is not declared in the header", path=path)
            rows = [
                (rec.chrom, rec.pos, rec.ref, alt, flag in rec.info)
                for rec in vcf
                for alt in rec.alts or ()
            ]
        return pd.DataFrame(rows, columns=KEY + ["label"])
    df = read_table(path)
    missing = [c for c in KEY + ["label"] if c not in df.columns]
    if missing:
        raise GenossmError(f"missing columns {missing}", path=path)
    labels = df["label"].astype(str).str.lower().map({"1": True, "true": True, "0": False, "false": False})
    if labels.isna().any():
        row = int(np.flatnonzero(labels.isna())[0])
        raise GenossmError(f"label {df['label'].iloc[row]!r} is not 1/0/true/false", path=path, where=f"row {row + 1}")
    return df[KEY].assign(label=labels.astype(bool))


def attach_labels(scores: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """``scores`` with a boolean ``label`` column (NaN where a variant has no label)."""
    scores = scores.assign(pos=scores["pos"].astype(np.int64), chrom=scores["chrom"].astype(str))
    labels = labels.assign(pos=labels["pos"].astype(np.int64), chrom=labels["chrom"].astype(str))
    labels = labels.drop_duplicates(KEY)
    return scores.drop(columns=["label"], errors="ignore").merge(labels, on=KEY, how="left")


# ---------------------------------------------------------------- ROC


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2.

    Computed from average ranks (Mann-Whitney U); NaN when either class is empty."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # average rank (1-based) of each run of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def roc_curve(scores, labels):
    """(false positive rate, true positive rate) calling positive every score >= a threshold,
    thresholds from high to low; tied scores move together."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp, fp = np.cumsum(y)[last_of_tie], np.cumsum(~y)[last_of_tie]
    return np.r_[0, fp / max(1, (~y).sum())], np.r_[0, tp / max(1, y.sum())]


@dataclass
class Separation:
    """How one score separates labelled positives from negatives."""

    score: str
    n_pos: int
    n_neg: int
    auc: float  # P(positive scores higher than negative)

    @property
    def direction_from(self) -> str:
        """'definition' for genossm's own scores, 'data' for others (then a chance-level score
        still looks a little better than 0.5)."""
        return "definition" if self.score in EXPECTED_DIRECTION else "data"

    @property
    def direction(self) -> str:
        """Where positives are expected: 'lower' or 'higher' scores."""
        if self.score in EXPECTED_DIRECTION:
            return EXPECTED_DIRECTION[self.score]
        return "higher" if self.auc >= 0.5 else "lower"

    @property
    def separation_auc(self) -> float:
        """AUC of the score oriented by ``direction``: 0.5 is chance, 1.0 perfect separation,
        below 0.5 the wrong way round."""
        return self.auc if self.direction == "higher" else 1 - self.auc


def usable(df: pd.DataFrame) -> pd.DataFrame:
    """Rows scored successfully (status 'ok' where the table has a status column)."""
    return df[df["status"] == "ok"] if "status" in df.columns else df


def separations(df: pd.DataFrame) -> list[Separation]:
    """One Separation per score column over the labelled, usable rows with a finite score."""
    df = usable(df)
    df = df[df["label"].notna()]
    out = []
    for col in score_columns(df):
        ok = np.isfinite(df[col].to_numpy(dtype=float))
        y = df["label"].to_numpy(dtype=bool)[ok]
        out.append(Separation(col, int(y.sum()), int((~y).sum()), roc_auc(df[col].to_numpy(dtype=float)[ok], y)))
    return out


# ---------------------------------------------------------------- figures


def _figure(n_panels: int, width: float = 5.0, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def plot_training(df: pd.DataFrame, path, title: str = "") -> None:
    """Loss (and accuracy, when logged) against the optimizer step; train and val curves."""
    panels = [loss_columns(df)] + ([acc] if (acc := [c for c in df.columns if "acc" in c.lower()]) else [])
    fig, axes = _figure(len(panels))
    for ax, cols in zip(axes, panels):
        for col in cols:
            d = df[["step", col]].dropna()
            style = {"marker": "o", "ms": 3} if len(d) < 30 else {"lw": 1}
            ax.plot(d["step"], d[col], label=f"{col} (last {d[col].iloc[-1]:.3f})" if len(d) else col, **style)
        ax.set_xlabel("step")
        ax.set_ylabel("loss" if cols is panels[0] else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title(title or "training")
    fig.savefig(path, dpi=110)


def plot_score_distributions(df: pd.DataFrame, path, title: str = "", class_names=("labelled", "unlabelled")) -> None:
    """A histogram per score column; split into positives and negatives when labels exist."""
    df = usable(df)
    cols = score_columns(df)
    fig, axes = _figure(len(cols))
    labelled = "label" in df.columns and df["label"].notna().any()
    for ax, col in zip(axes, cols):
        values = df[col].to_numpy(dtype=float)
        finite = np.isfinite(values)
        bins = np.histogram_bin_edges(values[finite], bins=40) if finite.any() else 10
        if labelled:
            y = df["label"].to_numpy()
            for want, name in ((True, class_names[0]), (False, class_names[1])):
                sel = finite & (y == want)
                ax.hist(values[sel], bins=bins, alpha=0.6, label=f"{name} (n={sel.sum()})")
            ax.legend(fontsize=8)
        else:
            ax.hist(values[finite], bins=bins, label=f"n={finite.sum()}")
            ax.legend(fontsize=8)
        ax.set_xlabel(col)
        ax.set_ylabel("variants")
        ax.grid(alpha=0.3)
    axes[0].set_title(title or "score distributions")
    fig.savefig(path, dpi=110)


def plot_roc(df: pd.DataFrame, seps: list[Separation], path, title: str = "") -> None:
    """ROC curve per score, each oriented towards the positives (legend: AUC and direction)."""
    df = usable(df)
    df = df[df["label"].notna()]
    fig, axes = _figure(1, width=4.6, height=4.2)
    ax = axes[0]
    for sep in seps:
        values = df[sep.score].to_numpy(dtype=float)
        ok = np.isfinite(values)
        sign = 1.0 if sep.direction == "higher" else -1.0
        fpr, tpr = roc_curve(sign * values[ok], df["label"].to_numpy(dtype=bool)[ok])
        ax.plot(fpr, tpr, label=f"{sep.score} ({sep.direction}) AUC {sep.separation_auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "separation of labelled variants")
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=110)


def embedding_matrix(df: pd.DataFrame) -> np.ndarray:
    cols = sorted((c for c in df.columns if re.fullmatch(r"emb_\d+", c)), key=lambda c: int(c[4:]))
    if not cols:
        raise GenossmError("no emb_<i> columns (expected a genossm embed parquet)")
    return df[cols].to_numpy(dtype=float)  # (regions, d)


def region_groups(names) -> list[str]:
    """Group of each region: its name without a trailing number ('cluster_07' -> 'cluster')."""
    return [re.sub(r"[_\-.:]?\d+$", "", str(n)) or str(n) for n in names]


def plot_embeddings(df: pd.DataFrame, path, title: str = "") -> None:
    """First two principal components of the region embeddings, coloured by region group."""
    x = embedding_matrix(df)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    pcs = x @ vt[:2].T  # (regions, 2)
    explained = s[:2] ** 2 / max((s**2).sum(), 1e-30)
    groups = region_groups(df["name"] if "name" in df.columns else [""] * len(df))
    fig, axes = _figure(1, width=4.8, height=4.2)
    ax = axes[0]
    for g in sorted(set(groups)):
        sel = np.array([group == g for group in groups])
        y = pcs[sel, 1] if pcs.shape[1] > 1 else np.zeros(sel.sum())
        ax.scatter(pcs[sel, 0], y, s=14, label=f"{g} (n={sel.sum()})")
    ax.set_xlabel(f"PC1 ({explained[0]:.0%})")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%})" if len(explained) > 1 else "PC2")
    ax.set_title(title or "region embeddings")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------- the whole report


def write_report(
    out_dir,
    metrics=None,
    scores=None,
    labels=None,
    label_flag: str = "MOTIF",
    embeddings=None,
    title: str = "genossm report",
) -> list[Path]:
    """Draw every figure the given inputs allow into ``out_dir`` (created; replaced atomically).

    Files (only those whose inputs were given): ``training.png``; ``scores.png``;
    with labels also ``roc.png`` and ``separation.tsv`` (score, n_pos, n_neg, auc = P(positive
    scores higher), direction where positives are expected, direction_from ``definition`` or
    ``data``, separation_auc = auc oriented that way); ``embeddings.png``; always ``index.html``
    linking them. Returns their paths.
    """
    from genossm.utils.atomic import atomic_output

    if metrics is None and scores is None and embeddings is None:
        raise GenossmError("nothing to report: give training metrics, scores or embeddings")
    # read everything first: bad input fails before any output exists
    log = read_training_log(metrics) if metrics is not None else None
    table = read_scores(scores) if scores is not None else None
    if labels is not None:
        if table is None:
            raise GenossmError("labels need scores to label", path=labels)
        table = attach_labels(table, read_labels(labels, label_flag))
        if table["label"].isna().all():
            raise GenossmError("no scored variant matches a labelled one on (chrom, pos, ref, alt)", path=labels)
    emb = read_table(embeddings) if embeddings is not None else None
    if emb is not None:
        embedding_matrix(emb)

    sections, files = [], []
    out_dir = Path(out_dir)
    with atomic_output(out_dir, directory=True) as tmp:
        if log is not None:
            plot_training(log, tmp / "training.png", title=f"training: {title}")
            last = {c: log[c].dropna().iloc[-1] for c in loss_columns(log) if log[c].notna().any()}
            summary = ", ".join(f"{c} {v:.4f}" for c, v in last.items())
            sections.append(("Training", "training.png", f"{int(log['step'].max())} steps; last {summary}"))
        if table is not None:
            flag = label_flag
            plot_score_distributions(table, tmp / "scores.png", title=title, class_names=(flag, f"not {flag}"))
            statuses = table["status"].value_counts().to_dict() if "status" in table.columns else {"ok": len(table)}
            sections.append(("Variant scores", "scores.png", f"{len(table)} alleles; status {statuses}"))
            if labels is not None:
                seps = separations(table)
                plot_roc(table, seps, tmp / "roc.png", title=title)
                pd.DataFrame(
                    [(s.score, s.n_pos, s.n_neg, s.auc, s.direction, s.direction_from, s.separation_auc) for s in seps],
                    columns=["score", "n_pos", "n_neg", "auc", "direction", "direction_from", "separation_auc"],
                ).to_csv(tmp / "separation.tsv", sep="\t", index=False, float_format="%.6g")
                text = "; ".join(f"{s.score}: AUC {s.separation_auc:.3f} ({flag} {s.direction})" for s in seps)
                sections.append((f"Separation of {flag} variants", "roc.png", text))
        if emb is not None:
            plot_embeddings(emb, tmp / "embeddings.png", title=title)
            sections.append(("Region embeddings", "embeddings.png", f"{len(emb)} regions"))
        body = "\n".join(
            f"<h2>{html.escape(h)}</h2>\n<p>{html.escape(t)}</p>\n<img src='{img}' alt='{html.escape(h)}'>"
            for h, img, t in sections
        )
        (tmp / "index.html").write_text(
            f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>\n"
            f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
        )
        files = sorted(p.name for p in tmp.iterdir())
    return [out_dir / f for f in files]
