"""The documentation site builds with no warning (`mkdocs build --strict`).

The API pages render every layer's docstrings through mkdocstrings, so this also catches a
docstring that griffe cannot parse (an undocumented or misspelt parameter, …) and a broken link
or anchor in the pages. Skipped when MkDocs is not installed (``pip install -e '.[docs]'``).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("material")
    # The build renders docstrings statically (griffe): nothing is imported or compiled.
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        print(proc.stdout)
        print(proc.stderr)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "conflow" / "index.html").is_file()
