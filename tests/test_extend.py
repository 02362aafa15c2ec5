"""A count that goes on from the trace of fewer fields at the same points (``start``,
``extends``): the same dimensions as counting from scratch, for fewer samples."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.engine.device_basis import DeviceBases
from conflow.engine.levels import TraceBases, dense_levels, device_levels, streamed_levels
from conflow.engine.rank import rank_band
from conflow.engine.streamed_basis import TraceBasis
from conflow.engine.trace import VectorFamily, lie_trace
from conflow.errors import InputError

POINTS = jnp.asarray(np.random.default_rng(0).standard_normal((3, 3)))


def _contact():
    # X = ∂1, Y = ∂2 + x1 ∂3: [X, Y] = ∂3 is new at level 1
    return VectorFamily(lambda z, a: jnp.array([a[0], a[1], a[1] * z[0]]), 3, 2)


def _first_only():
    # X = ∂1 alone: one of the contact family's two generators
    return VectorFamily(lambda z, a: jnp.array([a[0], 0.0, 0.0]), 3, 1)


@pytest.mark.parametrize("algorithm", ["dense", "streamed"])
@pytest.mark.parametrize("linalg", ["host", "device"])
def test_a_trace_goes_on_from_the_trace_of_fewer_fields(algorithm, linalg):
    options = {"algorithm": algorithm, "linalg": linalg}
    small = lie_trace(_first_only(), POINTS, keep_basis=True, **options)
    assert small.dim == 1 and small.basis.dims == (1, 1, 1) and small.basis.depth == 1
    assert np.allclose(np.abs(small.basis.rows[0]), [[1.0, 0.0, 0.0]])
    plain = lie_trace(_contact(), POINTS, **options)
    grown = lie_trace(_contact(), POINTS, start=small.basis, **options)
    assert grown.status == plain.status == "ok" and grown.dim == plain.dim == 3
    assert grown.started_from == (1, 1, 1) and grown.ranks[0] == (2, 2, 2)
    assert lie_trace(_contact(), POINTS).basis is None  # kept only on request


def test_a_start_needs_the_same_points():
    small = lie_trace(_first_only(), POINTS, keep_basis=True)
    with pytest.raises(InputError, match="not at these 2 points"):
        lie_trace(_contact(), POINTS[:2], start=small.basis)


def test_a_streamed_basis_of_orthonormal_rows_keeps_their_order():
    rng = np.random.default_rng(3)
    rows = np.linalg.qr(rng.standard_normal((7, 3)))[0].T  # (3, 7), orthonormal
    basis = TraceBasis.of_rows(rows)
    y = rng.standard_normal((4, 7))
    coordinates, residual = basis.project(y)
    assert basis.rank == 3 and np.allclose(np.abs(coordinates), np.abs(y @ rows.T))
    assert np.allclose(np.abs(basis.rows), np.abs(rows))
    assert np.allclose(np.sum(coordinates**2, 1) + np.sum(residual**2, 0), np.sum(y**2, 1))


class _Bar:
    def set_postfix_str(self, *args, **kwargs):
        pass

    def update(self, *args):
        pass


@pytest.mark.parametrize("start_depth,last", [(None, 1), (0, 0), (2, 2)])
@pytest.mark.parametrize("algorithm", ["dense", "streamed", "device"])
def test_a_started_loop_stops_no_earlier_than_the_depth_its_start_stopped_at(
        start_depth, last, algorithm):
    """Every level gives e_0 alone. The plain loop keeps it at level 0 and stops at level 1,
    which adds nothing; a loop started from a trace holding e_0 that stopped growing at depth d
    goes on to depth d (below it, brackets of the new fields with the start's deeper ones are
    not yet in the levels)."""
    P, n = 3, 4

    def nothing_new(which, first, depth, n_samples, chunk=None):
        values = np.zeros((len(which), n_samples, depth - first + 1, n))
        values[..., 0] = 1.0  # e_0 only: in the start's trace
        return values, np.ones(values.shape[:3])

    start = None if start_depth is None else TraceBases(
        tuple(np.eye(n)[:1] for _ in range(P)), tuple(np.zeros(1) for _ in range(P)),
        start_depth)
    band = lambda r, c, b: rank_band(r, c, basis_error=b)  # noqa: E731
    if algorithm == "dense":
        found = dense_levels(nothing_new, P, n, 2, 6, band, _Bar(), lambda: False, start=start)
    elif algorithm == "streamed":
        found = streamed_levels(nothing_new, P, n, 2, 6, band, 64, _Bar(), lambda: False,
                                start=start)
    else:
        found = device_levels(nothing_new, DeviceBases(P, n, np.float64), 2, 6, band, None,
                              _Bar(), lambda: False, start=start)
    assert found.converged and found.records[-1].depth == last
    assert found.dims == [1, 1, 1]  # the plain loop finds e_0 at level 0


@pytest.mark.parametrize("activation,linalg", [("tanh", "host"), ("gelu", "host"),
                                               ("tanh", "device")])
def test_the_recount_on_more_inputs_goes_on_from_the_count(activation, linalg):
    """Three inputs span too little: the count on them has laws that more inputs break. The
    recount on more inputs, started from the count's trace at its points, finds the same
    dimensions as a count from scratch there, with far fewer level-0 samples."""
    net = eqx.nn.MLP(3, 2, 4, 1, activation=getattr(jax.nn, activation),
                     key=jax.random.PRNGKey(1))
    few = cf.from_model(net, input_shape=(3,), n_inputs=3)
    more = few.with_inputs(np.random.default_rng(2).standard_normal((40, 3)))
    count = cf.count_laws(few, keep_basis=True, reduce_inputs=False, linalg=linalg)
    grown = cf.count_laws(more, extends=count, reduce_inputs=False, linalg=linalg)
    plain = cf.count_laws(more, reduce_inputs=False, linalg=linalg)
    assert count.status == grown.status == plain.status == "ok"
    assert grown.trace.started_from == count.trace.point_dims
    assert np.array_equal(grown.trace.points, count.trace.points)
    assert grown.n_laws == plain.n_laws < count.n_laws
    assert grown.trace.levels[0].samples < plain.trace.levels[0].samples
    assert grown.trace.basis is None and "from a trace of dimension" in grown.summary()
