"""GenoSSMConfig: every architectural choice of a genossm model, JSON round-trippable."""

import dataclasses
import json
import math
from dataclasses import dataclass

from genossm.tokenize import VOCAB_SIZE


@dataclass
class GenoSSMConfig:
    d_model: int = 256
    n_layer: int = 16
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int | str = "auto"  # "auto" = ceil(d_model / 16)
    # initial dt of the channels, log-uniform in [dt_min, dt_max]: the channels' initial memory
    # horizons span 1/dt_max .. 1/dt_min bases (genossm.evaluate.horizon)
    dt_min: float = 0.001
    dt_max: float = 0.1
    rc_equivariant: bool = False  # exact reverse-complement equivariance by parameter sharing
    # True: recompute each block in backward (activation checkpointing); "offload": also keep the
    # block inputs in pinned host memory instead of on the GPU (genossm.model.offload)
    checkpointing: bool | str = False
    vocab_size: int = VOCAB_SIZE
    context_length: int = 131_072  # default window for predict/embed
    norm_eps: float = 1e-5

    def __post_init__(self):
        if self.rc_equivariant and self.d_model % 2:
            raise ValueError(f"rc_equivariant needs an even d_model, got {self.d_model}")
        if self.checkpointing not in (False, True, "offload"):
            raise ValueError(f"checkpointing must be true, false or 'offload', got {self.checkpointing!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min {self.dt_min}, dt_max {self.dt_max}")
        if self.dt_rank != "auto" and not isinstance(self.dt_rank, int):
            raise ValueError(f"dt_rank must be an int or 'auto', got {self.dt_rank!r}")

    @property
    def stream_width(self) -> int:
        """Channels of one strand's residual stream (half of d_model when RC-equivariant)."""
        return self.d_model // 2 if self.rc_equivariant else self.d_model

    @property
    def d_inner(self) -> int:
        return self.expand * self.stream_width

    @property
    def resolved_dt_rank(self) -> int:
        return math.ceil(self.stream_width / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GenoSSMConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "GenoSSMConfig":
        return cls.from_dict(json.loads(text))
