"""The distribution as a user gets it: the built wheel, installed in a fresh virtualenv with
nothing of this checkout on its path, runs ``pgqueue demo`` and ``python -m pgqueue``."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

DISTRIBUTION = "pgqueue-tasks"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("*.whl")
    return built


def test_wheel_holds_the_package_its_sql_license_and_types(wheel: Path) -> None:
    assert wheel.name.startswith("pgqueue_tasks-")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = zf.read(metadata).decode()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = zf.read(entry_points).decode()
    assert f"Name: {DISTRIBUTION}\n" in meta
    assert "License-Expression: MIT" in meta
    assert "Classifier: Typing :: Typed" in meta
    # the features users may ask for; the development tools are dependency groups, not extras
    assert "Provides-Extra: all\n" in meta
    for development_only in ("test", "bench", "docs"):
        assert f"Provides-Extra: {development_only}\n" not in meta
    assert "pgqueue = pgqueue.cli:main" in scripts
    assert "pgqueue/py.typed" in names
    assert "pgqueue/__main__.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)
    migrations = sorted(p.name for p in (ROOT / "sql" / "migrations").glob("*.sql"))
    for name in migrations:
        assert f"pgqueue/sql/migrations/{name}" in names
    # development-only files stay out of what users install
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)


def test_wheel_in_a_fresh_virtualenv_runs_the_demo(wheel: Path, dsn: str, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        env=env,
        timeout=600,
    )
    run_env = {**env, "PGQUEUE_DSN": dsn}
    # Run from an empty directory: nothing of this checkout can be imported by accident.
    where = subprocess.run(
        [str(python), "-c", "import pgqueue; print(pgqueue.__file__)"],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(env_dir) in where.stdout, where.stdout
    help_text = subprocess.run(
        [str(python), "-m", "pgqueue", "--help"],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_text.returncode == 0, help_text.stderr
    assert "worker" in help_text.stdout and "beat" in help_text.stdout
    demo = subprocess.run(
        [str(env_dir / "bin" / "pgqueue"), "demo"],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "jobs of this tour left in pgqueue.jobs: 0" in demo.stdout, demo.stdout
    assert "worker stopped (exit 0)" in demo.stdout, demo.stdout
