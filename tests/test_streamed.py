"""The streamed (memory-bounded) trace gives the same counts as the dense one.

Blocks are made small (4–16 samples) so that every level spans several blocks and the
level-completion rule (a block with spare samples) is exercised on small models.
"""

import numpy as np
import pytest

import conflow as cf
from conflow.engine.trace import lie_trace


def _trace(model, flow, algorithm, **kw):
    flow = cf.GradientFlow() if flow is None else flow
    return lie_trace(flow.family(model), flow.sample_points(model, 0, 3), seed=0,
                     max_depth=8, algorithm=algorithm, **kw)


CASES = [
    ("linear", cf.linear([3, 4, 2]), None),
    ("deep linear", cf.linear([2, 3, 3, 2]), None),
    ("relu", cf.relu([3, 4, 2], bias=True), None),
    ("product", cf.product(4), None),
    ("momentum linear", cf.linear([2, 2, 2]), cf.MomentumFlow(0.5)),
    ("momentum relu", cf.relu([2, 3, 2]), cf.MomentumFlow(0.5)),
    ("nmf entropy", cf.nmf(3, 2, 3), cf.GradientFlow(metric="entropy")),
]


@pytest.mark.parametrize("label,model,flow", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("block", [4, 16])
def test_streamed_counts_equal_dense_counts(label, model, flow, block):
    dense = _trace(model, flow, "dense")
    streamed = _trace(model, flow, "streamed", block=block)
    assert dense.status == streamed.status == "ok"
    assert streamed.algorithm == "streamed" and dense.algorithm == "dense"
    assert streamed.dim == dense.dim
    assert streamed.ranks == dense.ranks  # same rank after every level, at every point
    assert streamed.gap > 1e8
    # Small blocks: the first level took several blocks (the streaming actually happened).
    if dense.ranks[0][0] > block:
        assert streamed.levels[0].samples > block


def test_streamed_rtol_below_rounding_is_ambiguous_not_a_count():
    streamed = _trace(cf.linear([3, 4, 2]), None, "streamed", block=8, rtol=1e-30)
    assert streamed.status == "ambiguous" and streamed.dim is None
    assert streamed.levels[-1].saturated


def test_streamed_depth_cap_is_not_converged():
    streamed = _trace(cf.linear([2, 2, 2]), cf.MomentumFlow(0.5), "streamed", block=8)
    capped = lie_trace(cf.MomentumFlow(0.5).family(cf.linear([2, 2, 2])), streamed.points,
                       max_depth=1, algorithm="streamed", block=8)
    assert streamed.status == "ok" and streamed.depth > 1
    assert capped.status == "not_converged" and capped.dim is None


def test_auto_streams_only_large_states_and_bad_arguments_are_named():
    from conflow.errors import InputError

    assert _trace(cf.linear([2, 2, 2]), None, "auto").algorithm == "dense"
    with pytest.raises(InputError, match="unknown algorithm"):
        _trace(cf.linear([2, 2, 2]), None, "lanczos")
    with pytest.raises(InputError, match="block must be"):
        _trace(cf.linear([2, 2, 2]), None, "streamed", block=1)


def test_count_laws_passes_the_algorithm_through():
    res = cf.count_laws(cf.relu([3, 4, 2]), method="numeric", algorithm="streamed")
    assert res.status == "ok" and res.n_laws == 4 and res.trace.algorithm == "streamed"
    assert res.to_json()["algorithm"] == "streamed"
    np.testing.assert_equal(res.trace.points.shape, (3, cf.relu([3, 4, 2]).D))


def test_streamed_float32_counts_with_a_warning():
    with pytest.warns(UserWarning, match="float32"):
        res = cf.count_laws(cf.linear([3, 4, 2]), method="numeric", algorithm="streamed",
                            dtype="float32")
    assert res.trace.dtype == "float32" and res.trace.algorithm == "streamed"
    assert res.status == "ok" and res.n_laws == 10  # r(r+1)/2 for hidden width r = 4
