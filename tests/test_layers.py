"""The package's layering contract (pyproject.toml, ``[tool.importlinter]``): nothing imports from
a layer above it, only the reference layer and the CLI see the literature's closed forms, and no
two modules of a layer import each other in a cycle."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_import_contract_is_kept():
    pytest.importorskip("importlinter")
    code = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    run = subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "3 kept, 0 broken" in run.stdout
