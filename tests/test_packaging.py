"""The wheel works outside the repository: build it, install it into a fresh venv (no deps:
the venv sees this environment's torch/transformers through --system-site-packages), and run
the CLI from a folder that is not the checkout."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.packaging


def test_wheel_installs_and_runs_outside_the_repo(tmp_path):
    pytest.importorskip("build")
    # build from a copy, so the checkout gets no build/ or egg-info
    src = tmp_path / "src_copy"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_FIND_LINKS")}
    run = lambda *cmd, cwd=tmp_path: subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    r = run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(src))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wheels = list((tmp_path / "dist").glob("slotmem-*.whl"))
    assert len(wheels) == 1
    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=False)
    bin_dir = tmp_path / "venv" / "bin"
    r = run(sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "--no-deps", "--no-index",
            str(wheels[0]))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    r = run(str(bin_dir / "python"), "-c", "import slotmem, slotmem.configs as c; print(slotmem.__file__); "
            "print(c.builtin_path('compare_mqar'))", cwd=outside)
    assert r.returncode == 0, r.stderr[-2000:]
    module_file, config = r.stdout.split()
    venv_dir = str(tmp_path / "venv")
    assert module_file.startswith(venv_dir) and config.startswith(venv_dir)  # the wheel's copy, not the checkout
    from slotmem import __version__

    r = run(str(bin_dir / "slotmem"), "--version", cwd=outside)
    assert r.returncode == 0 and r.stdout.strip() == f"slotmem {__version__}", r.stderr[-2000:]
    r = run(str(bin_dir / "slotmem"), "compare", "--help", cwd=outside)
    assert r.returncode == 0 and "compare_mqar" in r.stdout, r.stderr[-2000:]
    r = run(str(bin_dir / "slotmem"), "info", "--config", "lattice-tiny", "--context-lengths", "1024", cwd=outside)
    assert r.returncode == 0 and "LatticeForCausalLM" in r.stdout, r.stderr[-2000:]
