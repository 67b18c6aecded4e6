"""``genossm train``: masked-LM training from a YAML config (see genossm.train)."""

from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML config (sections model, data, optim, masking, trainer). With --resume, "
                   "defaults to RUN_DIR/config.yaml.")
@click.option("-o", "--out-dir", "run_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (checkpoints, logs, final model); overrides out_dir in the config.")
@click.option("--resume", is_flag=True, help="Continue from RUN_DIR/checkpoints/last.ckpt at the same step.")
@click.argument("overrides", nargs=-1, metavar="[KEY.SUB=VALUE]...")
def train(config_path, run_dir, resume, overrides):
    """Train a GenoSSM masked language model on a token store.

    Overrides set config keys, e.g. data.window=65536 trainer.max_steps=2000. The run
    directory holds config.yaml, checkpoints/ (last.ckpt, best.ckpt), logs/ (CSV, TensorBoard)
    and the final model/ (layout: genossm.train.run). SIGTERM or SIGUSR1 writes
    checkpoints/last.ckpt at the end of the current step and stops; --resume continues it.
    """
    from genossm.errors import GenossmError
    from genossm.train import load_config
    from genossm.train import train as run_training

    if config_path is None:
        if not (resume and run_dir is not None):
            raise GenossmError("--config is required (or --resume with -o RUN_DIR to reuse its config.yaml)")
        config_path = run_dir / "config.yaml"
    run_training(load_config(config_path, overrides), run_dir=run_dir, resume=resume)
