"""Correctness of the same-run symbolic baseline (benchmarks/symbolic_baseline.py).

The benchmark's speed-ups are only meaningful if the baseline counts right; these are tiny cases
with known counts (MATH.md §2.3, §2.4, §8). No timing assertions here.
"""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("sympy")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "symbolic_baseline.py"


@pytest.fixture(scope="module")
def sb():
    spec = importlib.util.spec_from_file_location("symbolic_baseline", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "kind, dims, bias, D, laws",
    [
        ("linear", [2, 2, 2], False, 8, 3),  # 2-layer linear: r(r+1)/2
        ("linear", [2, 5, 2], False, 20, 14),  # wide hidden layer: 14, not 15
        ("relu", [2, 2, 1], False, 6, 2),  # one law per hidden neuron
        ("relu", [1, 2, 1], True, 6, 2),  # with hidden biases
    ],
)
def test_counts(sb, kind, dims, bias, D, laws):
    res = sb.symbolic_trace(kind, dims, bias)
    assert res["D"] == D
    assert res["n_laws"] == laws
    n, seconds = sb.symbolic_count(kind, dims, bias)
    assert n == laws and seconds >= 0


def test_linear_needs_brackets(sb):
    # [2,2,2]: W_0 has rank 4 at a generic point, one bracket raises it to 5
    assert sb.symbolic_trace("linear", [2, 2, 2])["kept_per_level"] == [4, 1, 0]


def test_phi_layout_matches_conflow(sb):
    import jax.numpy as jnp
    import numpy as np
    import sympy as sp

    from conflow.models import linear, relu

    rng = np.random.default_rng(1)
    for kind, dims, bias, model in [
        ("linear", [2, 3, 2], False, linear([2, 3, 2])),
        ("relu", [2, 3, 2, 2], True, relu([2, 3, 2, 2], bias=True)),
    ]:
        theta, phi = sb.build_phi(kind, dims, bias)
        x = rng.standard_normal(len(theta))
        sym = np.array([float(p.xreplace(dict(zip(theta, map(sp.Float, x))))) for p in phi])
        np.testing.assert_allclose(sym, np.asarray(model.phi(jnp.asarray(x))), rtol=1e-12)
