"""Deep levels by chains of generic elements of W_s (`conflow.engine.deep_trace`), and the count
that goes on with them when its trace is still growing at the default depth cap.

Expected counts come from the deep-linear-net formula (`trust_models.linear_formula`, checked
against the closed-form laws in `test_trust.py`) or from the plain level construction run
deep enough; never from the engine under test.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import trust_models as tm

import conflow as cf
from conflow.engine.deep_trace import (
    INNER_DEPTH,
    LevelSum,
    deep_family,
    deep_trace,
    level_weights,
    reached_depth,
)
from conflow.laws import count as count_module
from conflow.laws.points import generic_points
from conflow.precision import float64_mode
from conflow.status import Status


def _family_and_points(dims, seed=0, n_points=3):
    model, flow = cf.linear(dims), cf.GradientFlow()
    return model, flow.family(model), generic_points(model, flow, seed, n_points).points


def test_reached_depth():
    assert [reached_depth(t) for t in range(4)] == [2, 5, 8, 11]
    assert reached_depth(1, inner_depth=3) == 7


def test_level_sum_spans_w_s_and_carries_its_scale():
    """Level 0 of F is W_s: its rank at each point is the plain trace's at depth s; and F's
    scale bounds its value (the terms whose cancellation produced it)."""
    _, family, points = _family_and_points([2, 3, 3, 1])
    plain = cf.lie_trace(family, points, max_depth=INNER_DEPTH, progress=False)
    weights = level_weights(family, points, INNER_DEPTH, seed=1)
    assert weights.shape == (INNER_DEPTH + 1,) and np.all(weights > 0)
    deep = cf.lie_trace(deep_family(family, weights), points, max_depth=0, progress=False)
    assert deep.levels[0].ranks == plain.levels[-1].ranks
    field, m = family.sampled
    level_sum = LevelSum(field, m, INNER_DEPTH, weights)
    rng = np.random.default_rng(0)
    with float64_mode():
        for z in points:
            c = jnp.asarray(rng.uniform(-1, 1, (INNER_DEPTH + 1) * m))
            value = level_sum(jnp.asarray(z), c)
            assert value.shape == z.shape
            assert float(level_sum.scale(jnp.asarray(z), c)) >= float(jnp.linalg.norm(value))


@pytest.mark.parametrize("seed", [0, 2])
def test_deep_trace_counts_random_linear_nets_with_one_output(seed):
    """Deep linear nets with one output (W_0 small next to the Lie algebra: the slowest
    growth there is) drawn at random, 2 hidden layers of width 2–4 (they need bracket depth
    ≤ 5): the deep trace stagnates at the formula's dimension by level 2 (depth 8)."""
    rng = np.random.default_rng(seed)
    dims = [int(rng.integers(2, 4))] + [int(x) for x in rng.integers(2, 5, 2)] + [1]
    model, family, points = _family_and_points(dims, seed)
    trace = deep_trace(family, points, max_depth=2, seed=seed, progress=False)
    assert trace.status == Status.OK, (dims, trace.reason)
    assert model.D - trace.dim == tm.linear_formula(dims), dims


@pytest.mark.parametrize("linalg", ["host", "device"])
def test_count_goes_deeper_when_the_default_cap_is_reached(monkeypatch, linalg):
    """linear [2,4,4,1] has 8 directions, the last at bracket depth 4 (ranks 2, 3, 5, 7, 8): with
    the first trace's cap lowered to 3 (so that the test stays cheap; 5 in use) the plain trace
    is still growing there, and the count goes on with deeper brackets. ``method="auto"`` first
    picks the exact engine by its estimate: held to a budget (shrunk here to nothing), it hands
    over to the numeric engine and says so. Both places of the linear algebra cut the same
    ranks. (The exact trace by evaluation, tried first for a polynomial φ, is out of the way.)"""
    monkeypatch.setattr(count_module, "_evaluated_trace", lambda *a, **k: None)
    monkeypatch.setattr(count_module, "PLAIN_DEPTH_BEFORE_DEEPER", 3)
    monkeypatch.setattr(count_module, "DEFAULT_NUMERIC_DEPTH", 4)
    monkeypatch.setattr(count_module, "AUTO_EXACT_MIN_SECONDS", 1e-3)
    monkeypatch.setattr(count_module, "AUTO_EXACT_FACTOR", 0.0)
    dims = [2, 4, 4, 1]
    if linalg == "device":  # an option given makes auto numeric: run the exact engine's case
        monkeypatch.setenv("CONFLOW_LINALG", "device")  # through the environment instead
    result = cf.count_laws(cf.linear(dims), progress=False)
    assert result.status == Status.OK, result.reason
    assert result.trace.linalg == linalg
    assert result.n_laws == tm.linear_formula(dims)
    assert result.method == "numeric" and "the exact engine ran past" in result.method_reason
    assert result.settled_by.startswith("deeper brackets")
    assert [a.step for a in result.attempts] == ["numeric", "deeper brackets"]
    assert result.attempts[0].status == Status.NOT_CONVERGED
    assert result.trace.ranks[-1] == result.trace.ranks[-2]  # it stagnated


def test_the_plain_levels_go_on_where_deeper_brackets_do_not_settle(monkeypatch):
    """Deeper brackets that do not settle the count (made to fail here) hand it back to the plain
    trace, to the default cap: the levels the first trace stopped short of settle it (the exact
    trace by evaluation out of the way)."""
    monkeypatch.setattr(count_module, "_evaluated_trace", lambda *a, **k: None)
    monkeypatch.setattr(count_module, "PLAIN_DEPTH_BEFORE_DEEPER", 3)
    monkeypatch.setattr(count_module, "DEFAULT_NUMERIC_DEPTH", 5)
    deep = count_module.deep_trace
    monkeypatch.setattr(count_module, "deep_trace", lambda *a, **k: dataclasses.replace(
        deep(*a, **k), status=Status.AMBIGUOUS, dim=None, reason="made to fail"))
    dims = [2, 4, 4, 1]
    result = cf.count_laws(cf.linear(dims), method="numeric", progress=False)
    assert result.status == Status.OK and result.n_laws == tm.linear_formula(dims)
    assert [a.step for a in result.attempts] == ["numeric", "deeper brackets", "plain levels"]
    assert [a.status for a in result.attempts] == [Status.NOT_CONVERGED, Status.AMBIGUOUS,
                                                   Status.OK]
    assert result.settled_by == "plain levels (to depth 5)" and result.trace.depth == 5


def test_a_cap_given_is_kept():
    """A ``max_depth`` the user gives bounds the count: no deeper step."""
    result = cf.count_laws(cf.linear([2, 4, 4, 1]), method="numeric", max_depth=3,
                           progress=False)
    assert result.status == Status.NOT_CONVERGED and not result.attempts
    assert "still growing at depth 3" in result.reason
