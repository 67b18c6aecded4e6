"""Training config: YAML + overrides, and errors that name the file (or override) and the key."""

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from genossm.cli import main
from genossm.errors import GenossmError
from genossm.train.config import load_config, save_config

EXAMPLE = Path(__file__).resolve().parents[1] / "genossm" / "train" / "example_config.yaml"


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = "model: {d_model: 32, n_layer: 2}\ndata: {store: x.store, window: 1024}\n"


def test_example_config_loads_with_overrides():
    config = load_config(EXAMPLE, ["data.store=my.store", "optim.lr=1e-3", "trainer.devices=2", "model.n_layer=4",
                                   "trainer.max_steps=1e4", "optim.betas=[0.9, 0.98]"])
    assert config.model.d_model == 256 and config.model.n_layer == 4
    assert config.model.context_length == 131072  # follows data.window unless set
    assert config.data.store == "my.store" and config.optim.lr == 1e-3 and config.optim.betas == (0.9, 0.98)
    assert config.trainer.devices == 2 and config.trainer.max_steps == 10_000


def test_defaults_and_round_trip(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.data.batch_size == 8 and config.masking.mask_prob == 0.15 and config.trainer.devices == "auto"
    assert config.model.context_length == 1024
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config
    assert yaml.safe_load((tmp_path / "saved.yaml").read_text())["optim"]["betas"] == [0.9, 0.95]


MODEL = "model: {d_model: 32, n_layer: 2}\n"


@pytest.mark.parametrize("text, where, problem", [
    ("modle: {}\n" + MINIMAL, "modle", "unknown key"),
    (MINIMAL + "trainer: {max_step: 5}\n", "trainer.max_step", "unknown key"),
    (MODEL + "data: {store: x, window: abc}\n", "data.window", "expected an integer, got 'abc'"),
    (MODEL + "data: {store: x, window: 10.5}\n", "data.window", "expected an integer"),
    (MINIMAL + "masking: {mask_prob: 1.5}\n", "masking.mask_prob", "must be in (0, 1)"),
    (MINIMAL + "masking: {mask_token_frac: 0.9, random_token_frac: 0.2}\n", "masking.random_token_frac",
     "must be <= 1"),
    (MINIMAL + "data2: 1\n", "data2", "unknown key"),
    ("model: {d_model: 32, n_layr: 2}\ndata: {store: x}\n", "model.n_layr", "unknown key"),
    ("model: {d_model: 33, rc_equivariant: true}\ndata: {store: x}\n", "model", "needs an even d_model"),
    (MODEL, "data", "missing required section"),
    (MODEL + "data: {window: 5}\n", "data.store", "missing required key"),
    (MINIMAL + "trainer: {precision: fp8}\n", "trainer.precision", "expected one of"),
    (MINIMAL + "trainer: {devices: 0}\n", "trainer.devices", "must be >= 1"),
    (MINIMAL + "trainer: {compile: fast}\n", "trainer.compile", "expected true/false or 'auto', got 'fast'"),
    (MINIMAL + "trainer: {compile: 1}\n", "trainer.compile", "expected true/false or 'auto', got 1"),
    (MODEL + "data: 3\n", "data", "expected a mapping"),
    (MINIMAL + "optim: {betas: [0.9]}\n", "optim.betas", "expected a list of 2 values"),
    (MODEL + "data: {store: x, rc_augment: yes please}\n", "data.rc_augment", "expected true/false"),
    (MINIMAL + "seed: -1\n", "seed", "must be >= 0"),
])
def test_bad_config_names_file_and_key(tmp_path, text, where, problem):
    path = write(tmp_path, text)
    with pytest.raises(GenossmError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: {where}: ") and problem in err.value.problem


@pytest.mark.parametrize("text, expected", [("", "auto"), ("auto", "auto"), ("true", True), ("false", False)])
def test_trainer_compile_values(tmp_path, text, expected):
    overrides = [f"trainer.compile={text}"] if text else []
    config = load_config(write(tmp_path, MINIMAL), overrides)
    assert config.trainer.compile == expected
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml").trainer.compile == expected


def test_override_errors_name_the_override(tmp_path):
    path = write(tmp_path, MINIMAL)
    with pytest.raises(GenossmError, match=r"command-line override 'data.window=-4': data.window: must be >= 1"):
        load_config(path, ["data.window=-4"])
    with pytest.raises(GenossmError, match="expected key.sub=value"):
        load_config(path, ["data.window"])
    with pytest.raises(GenossmError, match="unknown key"):
        load_config(path, ["data.windw=5"])
    with pytest.raises(GenossmError, match="data.store is not a section"):
        load_config(path, ["data.store.x=5"])


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(GenossmError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(GenossmError, match=r"line 2: not valid YAML"):
        load_config(write(tmp_path, "model: {d_model: 32\ndata: [\n"))
    with pytest.raises(GenossmError, match="expected a mapping of sections"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    path = write(tmp_path, MINIMAL + "trainer: {max_steps: 0}\n")
    result = CliRunner().invoke(main, ["train", "-c", str(path), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "trainer.max_steps: must be >= 1" in result.output
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(main, ["train", "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--config is required" in result.output
