"""Training configuration: dataclasses loaded from YAML, with ``key.sub=value`` overrides.

A config file has one mapping per section::

    seed: 0
    out_dir: runs/ecoli          # the run directory (``genossm train -o`` overrides it)
    model:   {d_model: 256, n_layer: 16}        # GenoSSMConfig fields (defaults: the reference model)
    data:    {store: data/ecoli.store, window: 131072, batch_size: 8}
    optim:   {lr: 0.001, warmup_steps: 1000}
    masking: {mask_prob: 0.15}
    trainer: {max_steps: 10000, val_every_n_steps: 1000}

Every key is checked: unknown keys, wrong types and out-of-range values are errors that name the
config file (or the command-line override) and the dotted key. Paths in the config are taken
relative to the working directory, as on the command line. ``model.context_length`` defaults to
``data.window`` so an exported model's default window is the one it was trained on.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from genossm.errors import GenossmError
from genossm.model import GenoSSMConfig


@dataclass
class DataConfig:
    store: str  # token store directory (genossm preprocess output)
    window: int = 131_072  # bases per training and validation window
    batch_size: int = 8  # windows per micro-batch per device
    val_batch_size: int | None = None  # defaults to batch_size
    max_n_fraction: float = 0.5  # training windows with more N (of non-pad bases) are redrawn
    rc_augment: bool = True  # reverse-complement half of the training windows
    max_val_windows: int | None = None  # cap on validation windows (evenly spaced subset)
    num_workers: int = 4
    pin_memory: bool = True  # only used when training on a GPU

    def problems(self):
        if self.window < 1:
            yield "window", f"must be >= 1, got {self.window}"
        if self.batch_size < 1:
            yield "batch_size", f"must be >= 1, got {self.batch_size}"
        if self.val_batch_size is not None and self.val_batch_size < 1:
            yield "val_batch_size", f"must be >= 1, got {self.val_batch_size}"
        if not 0.0 <= self.max_n_fraction <= 1.0:
            yield "max_n_fraction", f"must be in [0, 1], got {self.max_n_fraction}"
        if self.max_val_windows is not None and self.max_val_windows < 1:
            yield "max_val_windows", f"must be >= 1 (or null for all), got {self.max_val_windows}"
        if self.num_workers < 0:
            yield "num_workers", f"must be >= 0, got {self.num_workers}"


@dataclass
class MaskingConfig:
    mask_prob: float = 0.15  # fraction of real bases (A/C/G/T) selected for prediction
    mask_token_frac: float = 0.8  # of the selected: replaced by [MASK]
    random_token_frac: float = 0.1  # of the selected: replaced by a random base (the rest: kept)
    softmask_weight: float = 1.0  # loss weight of soft-masked (lowercase) bases; 1 = no down-weighting

    def problems(self):
        if not 0.0 < self.mask_prob < 1.0:
            yield "mask_prob", f"must be in (0, 1), got {self.mask_prob}"
        for key in ("mask_token_frac", "random_token_frac"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                yield key, f"must be in [0, 1], got {getattr(self, key)}"
        if self.mask_token_frac + self.random_token_frac > 1.0 + 1e-9:
            yield "random_token_frac", "mask_token_frac + random_token_frac must be <= 1"
        if self.softmask_weight < 0.0:
            yield "softmask_weight", f"must be >= 0, got {self.softmask_weight}"


@dataclass
class OptimConfig:
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.1  # not applied to norms, biases, A_log and D
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 1000  # linear warmup, then cosine decay to min_lr_ratio * lr at max_steps
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping

    def problems(self):
        if self.lr <= 0.0:
            yield "lr", f"must be > 0, got {self.lr}"
        if self.weight_decay < 0.0:
            yield "weight_decay", f"must be >= 0, got {self.weight_decay}"
        if not all(0.0 <= b < 1.0 for b in self.betas):
            yield "betas", f"each must be in [0, 1), got {list(self.betas)}"
        if self.eps <= 0.0:
            yield "eps", f"must be > 0, got {self.eps}"
        if self.warmup_steps < 0:
            yield "warmup_steps", f"must be >= 0, got {self.warmup_steps}"
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            yield "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}"
        if self.grad_clip < 0.0:
            yield "grad_clip", f"must be >= 0, got {self.grad_clip}"


@dataclass
class TrainerConfig:
    max_steps: int = 10_000  # optimizer steps
    accumulate_grad_batches: int = 1
    val_every_n_steps: int = 1000  # validation (and best checkpoint) every n optimizer steps and at the end
    checkpoint_every_n_steps: int = 500  # checkpoints/last.ckpt every n optimizer steps
    log_every_n_steps: int = 10
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    devices: int | Literal["auto"] = "auto"  # under srun: tasks per node
    num_nodes: int = 1  # under srun: the job's node count
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"  # auto: bf16-mixed on GPU, 32 on CPU
    # torch.compile the blocks (GenoSSM.compile_blocks); auto: on CUDA only, where it pays back its ~1 min
    # compile time (1.65x faster steps at 1 Mb windows); Inductor on CPU compiles for minutes
    compile: bool | Literal["auto"] = "auto"
    progress_bar: bool = True

    def problems(self):
        for key in ("max_steps", "accumulate_grad_batches", "val_every_n_steps", "checkpoint_every_n_steps",
                    "log_every_n_steps", "num_nodes"):
            if getattr(self, key) < 1:
                yield key, f"must be >= 1, got {getattr(self, key)}"
        if self.devices != "auto" and self.devices < 1:
            yield "devices", f"must be >= 1 or 'auto', got {self.devices}"


@dataclass
class TrainConfig:
    data: DataConfig
    model: GenoSSMConfig = field(default_factory=GenoSSMConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    out_dir: str | None = None  # run directory; the CLI's -o wins

    def to_dict(self) -> dict:
        """Plain YAML-safe dict (tuples as lists) that :func:`config_from_dict` reads back."""
        return _plain(dataclasses.asdict(self))


SECTIONS = ("model", "data", "optim", "masking", "trainer")


def load_config(path, overrides=()) -> TrainConfig:
    """Read a YAML config, apply ``key.sub=value`` overrides (values parsed as YAML), validate."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise GenossmError(f"cannot read config: {err.strerror}", path=path) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise GenossmError(f"not valid YAML: {getattr(err, 'problem', err)}", path=path, where=where) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise GenossmError(f"expected a mapping of sections at top level, got {type(raw).__name__}", path=path)
    sources = {}
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(raw, key, value, f"command-line override {text!r}")
        sources[key] = f"command-line override {text!r}"
    return config_from_dict(raw, source=str(path), sources=sources)


def parse_override(text: str):
    """``"data.window=4096"`` -> (``"data.window"``, 4096); the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise GenossmError("expected key.sub=value", where=f"command-line override {text!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def config_from_dict(raw: dict, source: str = "config", sources=None) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a nested dict (as read from YAML).

    ``source`` names the origin in errors; ``sources`` maps dotted keys to a more specific origin
    (such as a command-line override).
    """
    sources = sources or {}

    def fail(key, problem):
        raise GenossmError(problem, path=sources.get(key, source), where=key)

    unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        fail(unknown[0], f"unknown key (known: {', '.join(f.name for f in dataclasses.fields(TrainConfig))})")
    for name in SECTIONS:
        if name in raw and not isinstance(raw[name], dict):
            fail(name, f"expected a mapping, got {type(raw[name]).__name__}")
    if "data" not in raw:
        fail("data", "missing required section (at least data.store)")

    sections = {}
    for name, cls in (("data", DataConfig), ("optim", OptimConfig), ("masking", MaskingConfig),
                      ("trainer", TrainerConfig)):
        sections[name] = _build(cls, raw.get(name, {}), name, fail)
        for key, problem in sections[name].problems():
            fail(f"{name}.{key}", problem)
    sections["model"] = _build(GenoSSMConfig, {"context_length": sections["data"].window, **raw.get("model", {})},
                               "model", fail)
    seed = _coerce(raw.get("seed", 0), int, "seed", fail)
    if seed < 0:
        fail("seed", f"must be >= 0, got {seed}")
    out_dir = _coerce(raw.get("out_dir"), str | None, "out_dir", fail)
    return TrainConfig(**sections, seed=seed, out_dir=out_dir)


def save_config(config: TrainConfig, path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _build(cls, values: dict, section: str, fail):
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            fail(f"{section}.{key}", f"unknown key (known in {section}: {', '.join(known)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{section}.{f.name}"
        if f.name in values:
            kwargs[f.name] = _coerce(values[f.name], hints[f.name], key, fail)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            fail(key, "missing required key")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, GenossmError) as err:
        fail(section, str(getattr(err, "problem", err)))


def _coerce(value, tp, key, fail):
    """Check ``value`` against type ``tp``; converts only where YAML is ambiguous (1e-3, 1e6, 2.0)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, _raise_mismatch)
            except _Mismatch:
                continue
        fail(key, f"expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        fail(key, f"expected one of {', '.join(map(repr, typing.get_args(tp)))}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            fail(key, f"expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key, fail) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        number = _number(value)
        if number is not None and float(number).is_integer():
            return int(number)
    elif tp is float:
        number = _number(value)
        if number is not None:
            return float(number)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is typing.Any:
        return value
    fail(key, f"expected {_describe(tp)}, got {value!r}")


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value.replace("_", ""))  # PyYAML reads 1e-3 and 1e6 as strings
        except ValueError:
            return None
    return None


class _Mismatch(Exception):
    pass


def _raise_mismatch(key, problem):
    raise _Mismatch(problem)


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " or ".join(map(repr, typing.get_args(tp)))
    if tp is type(None):
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _set_dotted(raw: dict, key: str, value, origin: str) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise GenossmError(f"{'.'.join(parents[: i + 1])} is not a section", where=origin)
        node = child
    node[leaf] = value


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
