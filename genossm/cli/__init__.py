"""The ``genossm`` command: a thin click layer over library functions.

Subcommands are imported only when invoked, so ``genossm --help`` is fast and a command's heavy
dependencies (torch, pysam, snakemake) load only when needed. Data goes to files or stdout;
logs and progress bars go to stderr.
"""

import importlib
import sys

import click

from genossm import __version__
from genossm.errors import GenossmError

# name -> "module:function"; each module defines one click command.
COMMANDS = {
    "preprocess": "genossm.cli.preprocess:preprocess",
    "train": "genossm.cli.train:train",
    "predict": "genossm.cli.predict:predict",
    "embed": "genossm.cli.embed:embed",
    "evaluate": "genossm.cli.evaluate:evaluate",
    "report": "genossm.cli.report:report",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GenossmError as err:
            click.echo(f"genossm: error: {err}", err=True)
            sys.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="genossm")
def main():
    """genossm: long-context DNA language models (preprocess -> train -> predict/embed)."""
