"""The GPU machines have only torch, triton, lightning, numpy and pandas: the kernels, the model and
training must import (and a training step must run) without pysam, Biopython or snakemake."""

import subprocess
import sys

BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('pysam', 'Bio', 'snakemake', 'pyarrow'):
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, Block())
"""

CHECK = """
import torch
import genossm.kernels, genossm.model, genossm.train, genossm.store, genossm.tokenize
import genossm.model.longseq
from genossm.model import GenoSSM, GenoSSMConfig
from genossm.store import create_store, TokenStore
model = GenoSSM(GenoSSMConfig(d_model=16, n_layer=1, d_state=4))
model(torch.randint(0, 4, (1, 32))).sum().backward()
print('ok')
"""


def test_core_imports_without_pysam_biopython_snakemake():
    out = subprocess.run([sys.executable, "-c", BLOCKER + CHECK], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
