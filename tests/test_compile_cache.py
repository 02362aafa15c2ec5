"""The command's persistent compilation cache (`conflow.compile_cache`): a second process reuses
the first one's compiled programs; ``CONFLOW_CACHE_DIR=off`` turns it off; importing conflow
leaves JAX's cache setting alone."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNT = [sys.executable, "-m", "conflow", "count", "relu", "2,3,2", "--bias", "--method",
         "numeric", "--json"]


def _run(argv, cache):
    env = {**os.environ, "CONFLOW_CACHE_DIR": str(cache)}
    run = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def test_the_command_fills_and_reuses_the_cache(tmp_path):
    cache = tmp_path / "jax"
    first = _run(COUNT, cache)
    entries = sorted(p.name for p in cache.iterdir())
    assert entries  # compiled programs were stored
    second = _run(COUNT, cache)
    assert sorted(p.name for p in cache.iterdir()) == entries  # reused, nothing new compiled
    assert first.stdout.split('"seconds"')[0] == second.stdout.split('"seconds"')[0]


def test_the_cache_can_be_turned_off_and_the_library_leaves_jax_alone(tmp_path):
    _run(COUNT, "off")
    probe = ("import jax, conflow as cf; cf.count_laws(cf.linear([2, 3, 2]), method='numeric'); "
             "print(jax.config.jax_compilation_cache_dir)")
    run = _run([sys.executable, "-c", probe], tmp_path / "unused")
    assert run.stdout.strip() == "None" and not (tmp_path / "unused").exists()
