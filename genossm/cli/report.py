"""``genossm report``: figures and an HTML page from training logs, scores and embeddings."""

import click


@click.command()
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(),
              help="Output directory (replaced atomically).")
@click.option(
    "--metrics",
    type=click.Path(),
    help="A training run directory (genossm train -o), or one Lightning metrics.csv.",
)
@click.option("--scores", type=click.Path(), help="genossm predict table (.parquet or .tsv).")
@click.option(
    "--labels",
    type=click.Path(),
    help="Variant labels: a VCF whose INFO flag --label-flag marks positives, or a TSV/parquet "
    "with columns chrom, pos, ref, alt, label. Matched to scores on (chrom, pos, ref, alt).",
)
@click.option("--label-flag", default="MOTIF", show_default=True, help="INFO flag marking positives in a labels VCF.")
@click.option("--embeddings", type=click.Path(), help="genossm embed parquet (one row per region).")
@click.option("--title", default="genossm report", show_default=True, help="Title of index.html.")
def report(out_dir, metrics, scores, labels, label_flag, embeddings, title):
    """Draw training curves, score distributions, label separation (ROC AUC) and an embedding PCA.

    Writes into OUT whichever of training.png, scores.png, roc.png + separation.tsv and
    embeddings.png its inputs allow, plus index.html showing them.
    """
    from genossm.report import write_report

    files = write_report(out_dir, metrics, scores, labels, label_flag, embeddings, title)
    click.echo(f"genossm report: wrote {', '.join(str(f) for f in files)}", err=True)
