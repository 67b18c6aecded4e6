"""Masked-LM training of GenoSSM models with Lightning: config, data, module, and the run."""

from genossm.train.config import TrainConfig, config_from_dict, load_config
from genossm.train.data import GenomeDataModule
from genossm.train.module import MaskedLMModule
from genossm.train.run import train

__all__ = ["GenomeDataModule", "MaskedLMModule", "TrainConfig", "config_from_dict", "load_config", "train"]
