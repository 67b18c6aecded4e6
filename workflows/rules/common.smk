# Helpers shared by the rules: the sample sheet, input lookups, resources and the list of final
# outputs. Everything is derived from `config` (validated in the Snakefile).

import csv
import json
import os
import re
import shlex

# The conda env's post-deploy script installs genossm from this checkout.
os.environ.setdefault("GENOSSM_SOURCE", workflow.basedir)

TABLES = {"genome": "genomes", "reads": "reads", "variants": "variants", "regions": "regions"}
SHEET_COLUMNS = ("kind", "name", "path", "genome", "options", "label_flag", "models")
# the sheet columns each kind of row may fill (the config schema's keys for that table)
SHEET_KEYS = {
    "genome": {"path", "options"},
    "reads": {"path", "genome", "options"},
    "variants": {"path", "genome", "label_flag", "models"},
    "regions": {"path", "genome", "models"},
}
NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9_.-]*"


def load_sample_sheet(path):
    """Add the rows of a sample-sheet TSV to config's tables (one-line errors name the row)."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: sample sheet not found")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path}: empty sample sheet (expected a header and rows)")
    unknown = set(rows[0]) - set(SHEET_COLUMNS)
    if unknown or not {"kind", "name", "path"} <= set(rows[0]):
        raise ValueError(
            f"{path}: columns must include kind, name, path (optional: genome, options, "
            f"label_flag, models); got {', '.join(rows[0])}"
        )
    for line, row in enumerate(rows, start=2):
        kind, name = (row.get("kind") or "").strip(), (row.get("name") or "").strip()
        where = f"{path}: line {line}"
        if kind not in TABLES:
            raise ValueError(f"{where}: kind {kind!r} is not one of {', '.join(TABLES)}")
        if not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(f"{where}: name {name!r} must match {NAME_PATTERN}")
        table = config.setdefault(TABLES[kind], {})
        if name in table:
            raise ValueError(f"{where}: {kind} {name!r} is already defined")
        entry = {k: row[k].strip() for k in SHEET_COLUMNS[2:] if (row.get(k) or "").strip()}
        misplaced = sorted(set(entry) - SHEET_KEYS[kind])
        if misplaced:
            raise ValueError(f"{where}: {kind} rows take no {', '.join(misplaced)}")
        if "path" not in entry:
            raise ValueError(f"{where}: empty path")
        if "models" in entry:
            entry["models"] = [m.strip() for m in entry["models"].split(",") if m.strip()]
        if kind in ("variants", "regions") and "genome" not in entry:
            raise ValueError(f"{where}: {kind} rows need a genome")
        table[name] = entry


def check_references():
    """Every name an entry refers to exists (a clear error at parse time, not a missing file)."""
    for kind in ("reads", "variants", "regions"):
        for name, entry in config[kind].items():
            genome = entry.get("genome")
            if genome is not None and genome not in config["genomes"]:
                raise ValueError(f"config: {kind} {name!r}: unknown genome {genome!r}")
            for model in entry.get("models", []):
                if model not in config["models"]:
                    raise ValueError(f"config: {kind} {name!r}: unknown model {model!r}")
    for name, entry in config["models"].items():
        if "genome" in entry and entry["genome"] not in config["genomes"]:
            raise ValueError(f"config: model {name!r}: unknown genome {entry['genome']!r}")
        if "reads" in entry and entry["reads"] not in config["reads"]:
            raise ValueError(f"config: model {name!r}: unknown read set {entry['reads']!r}")


def fill_entry_defaults():
    """Defaults of per-entry keys (the schema's `default`s apply to fixed properties only)."""
    for kind in ("genomes", "reads"):
        for entry in config[kind].values():
            entry.setdefault("options", "")
    for entry in config["models"].values():
        entry.setdefault("overrides", {})


if config["sample_sheet"]:
    load_sample_sheet(config["sample_sheet"])
fill_entry_defaults()
check_references()


# ---------------------------------------------------------------- inputs


def genome_store(name):
    return f"results/stores/genomes/{name}"


def training_store(wildcards):
    entry = config["models"][wildcards.model]
    if "reads" in entry:
        return f"results/stores/reads/{entry['reads']}"
    return genome_store(entry["genome"])


def reads_reference(wildcards):
    """The reference FASTA a CRAM read set decodes against, or nothing (BAM, uBAM)."""
    entry = config["reads"][wildcards.readset]
    if not entry["path"].lower().endswith(".cram"):
        return {}
    if "genome" not in entry:
        raise ValueError(
            f"config: reads {wildcards.readset!r}: a CRAM needs a genome (its reference)"
        )
    return {"reference": config["genomes"][entry["genome"]]["path"]}


def models_for(entry):
    return entry.get("models") or list(config["models"])


def variant_labels(wildcards):
    """The variant set itself when it carries labels (an INFO flag), for the report."""
    entry = config["variants"][wildcards.vset]
    return {"labels": entry["path"]} if "label_flag" in entry else {}


# ---------------------------------------------------------------- parameters


def train_overrides(wildcards):
    """`key=value` arguments for genossm train: the model's overrides, then what the workflow
    must control (store, devices and nodes matching the resources it requests)."""
    overrides = dict(config["models"][wildcards.model]["overrides"])
    overrides["data.store"] = training_store(wildcards)
    overrides["trainer.accelerator"] = "gpu" if config["gpu"]["enabled"] else "cpu"
    overrides["trainer.devices"] = config["gpu"]["train_devices"]
    overrides["trainer.num_nodes"] = config["gpu"]["train_nodes"]
    # values are read back as YAML: JSON is valid YAML and unambiguous
    return " ".join(shlex.quote(f"{k}={json.dumps(v)}") for k, v in overrides.items())


def device():
    return "cuda" if config["gpu"]["enabled"] else "cpu"


def label_options(wildcards):
    entry = config["variants"][wildcards.vset]
    return f"--label-flag {shlex.quote(entry['label_flag'])}" if "label_flag" in entry else ""


# ---------------------------------------------------------------- resources


def res(rule, key):
    return config["resources"][rule][key]


def gpus(rule):
    """GPUs a predict/embed job requests (0 with GPUs disabled)."""
    return config["gpu"][rule] if config["gpu"]["enabled"] else 0


def gpu_model():
    return config["gpu"]["model"] if config["gpu"]["enabled"] else ""


def train_layout():
    """SLURM request of a training job: one task per device, `train_devices` per node.

    Resources the slurm executor reads: gpu + gpu_model (--gpus, a job total) on one node; gres
    (--gres, per node) on several, so each node gets its share. Under SLURM the rule starts `srun`
    itself, one task per device (Lightning reads ranks from SLURM), for a single device too, so
    that --signal=USR1 (delivered to job steps only) reaches it. `mpi` (set with several tasks:
    the executor then wants tasks or tasks_per_node > 1) and even an empty `mpi` key keep the
    executor from adding its own `srun -n1`. tasks_per_gpu 0 stops it from reading `tasks` as
    tasks per GPU. Unused keys are 0 or "".
    """
    gpu = config["gpu"]
    devices, nodes = gpu["train_devices"], gpu["train_nodes"]
    tasks = devices * nodes
    single = nodes == 1
    per_node = f"gpu:{gpu['model']}:{devices}" if gpu["model"] else f"gpu:{devices}"
    return {
        "gpu": devices if gpu["enabled"] and single else 0,
        "gpu_model": gpu_model() if single else "",
        "gres": per_node if gpu["enabled"] and not single else "",
        "mpi": "srun" if tasks > 1 else "",
        "tasks_per_node": devices if tasks > 1 and devices > 1 else 0,
        "tasks": tasks if tasks > 1 and devices == 1 else 0,
        "tasks_per_gpu": 0,
        "nodes": nodes,
    }


# ---------------------------------------------------------------- targets


def final_outputs():
    """Every product of the configuration: stores, models, scores, embeddings and reports."""
    out = [genome_store(g) for g in config["genomes"]]
    out += [f"results/stores/reads/{r}" for r in config["reads"]]
    for model in config["models"]:
        out += [f"results/models/{model}/model", f"results/report/{model}/training"]
    for vset, entry in config["variants"].items():
        for model in models_for(entry):
            out += [
                f"results/predict/{model}/{vset}.parquet",
                f"results/report/{model}/variants/{vset}",
            ]
    for rset, entry in config["regions"].items():
        for model in models_for(entry):
            out += [
                f"results/embed/{model}/{rset}.parquet",
                f"results/report/{model}/regions/{rset}",
            ]
    return out
