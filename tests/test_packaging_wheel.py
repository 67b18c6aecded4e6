"""The package builds as a wheel that, installed into a fresh venv, provides genossm.kernels
(the top-level kernels/ folder mapped into the package) from the wheel itself."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv_and_imports_kernels(tmp_path):
    # Build from a copy so concurrent runs never share build/ or *.egg-info in the checkout.
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("genossm", "kernels"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, source / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check",
                    "--outdir", str(tmp_path / "dist"), str(source)], check=True, capture_output=True, env=env)
    (wheel,) = (tmp_path / "dist").glob("genossm-*.whl")
    # Every module of the checkout is in the wheel (pyproject lists packages explicitly).
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"genossm/{p.relative_to(source / 'genossm')}" for p in (source / "genossm").rglob("*.py")}
    expected |= {f"genossm/kernels/{p.relative_to(source / 'kernels')}" for p in (source / "kernels").rglob("*.py")}
    assert expected - shipped == set()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, capture_output=True, env=env)
    # torch/triton/numpy come from the test environment, on a path placed after the venv's own
    # site-packages (a plain .pth line: the checkout's editable-install hook is not run).
    fresh_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip()
    Path(fresh_site, "test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = (
        "import importlib, pkgutil, genossm.kernels\n"
        "print(genossm.kernels.__file__)\n"
        "for info in pkgutil.walk_packages(genossm.kernels.__path__, 'genossm.kernels.'):\n"
        "    print(importlib.import_module(info.name).__file__)\n"
    )
    result = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    kernels_file, *module_files = result.stdout.split()
    assert Path(kernels_file) == Path(fresh_site) / "genossm" / "kernels" / "__init__.py"
    assert module_files and all(Path(f).is_relative_to(fresh_site) for f in module_files), module_files
