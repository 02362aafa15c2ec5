"""Run a command in a fresh Python process and time it (imports and compilation included).

Shared by the benchmark scripts, which run as ``python benchmarks/bench_*.py`` (this folder is
then on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def env() -> dict:
    """The current environment with the repository on PYTHONPATH."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), out.get("PYTHONPATH")) if p)
    return out


def run(cmd: list[str], timeout: float | None, extra_env: dict | None = None) -> dict:
    """Run ``cmd`` in a fresh process (``extra_env`` added to its environment): wall seconds,
    exit code, stdout, stderr, or a timeout."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env={**env(), **(extra_env or {})},
                           capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"timeout": True, "wall": time.perf_counter() - t0, "rc": None, "out": "",
                "err": ""}
    return {"timeout": False, "wall": time.perf_counter() - t0, "rc": p.returncode,
            "out": p.stdout, "err": p.stderr}


def last_json(text: str):
    """The last line of ``text`` that is a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON object on stdout")


def run_json(cmd: list[str], timeout: float | None,
             extra_env: dict | None = None) -> tuple[dict, dict | None]:
    """`run` (with ``extra_env``) and parse the last JSON line: (wall/rc/timeout/error record,
    JSON or ``None``)."""
    r = run(cmd, timeout, extra_env)
    record = {"wall_s": r["wall"], "timeout": r["timeout"], "rc": r["rc"], "error": None}
    if r["timeout"]:
        record["error"] = f"timed out after {timeout:.0f} s"
        return record, None
    try:
        return record, last_json(r["out"])
    except ValueError as exc:
        record["error"] = f"{exc}; rc {r['rc']}; stderr: {r['err'].strip()[-300:]}"
        return record, None
