"""TraceBasis: left-looking Householder QR with a cut keeps an orthonormal basis of the span."""

import numpy as np

from conflow.engine.streamed_basis import TraceBasis

rng = np.random.default_rng(0)


def _random_subspace(n, r):
    return np.linalg.qr(rng.standard_normal((n, r)))[0].T  # (r, n), orthonormal rows


def test_blocks_of_a_subspace_find_its_dimension_and_stay_orthonormal():
    n, r = 60, 37
    span = _random_subspace(n, r)
    basis = TraceBasis(n)
    added = []
    for _ in range(6):  # blocks of 10: 37 directions need 4 blocks, then nothing is new
        sigma, k = basis.extend(rng.standard_normal((10, r)) @ span, rtol=1e-9)
        added.append(k)
        if k < 10:  # the cut falls in a clean gap: noise below, directions well above
            assert sigma[k] < 1e-12 and (k == 0 or sigma[k - 1] > 1e-3)
    assert added == [10, 10, 10, 7, 0, 0]
    t = basis.rows
    assert t.shape == (r, n)
    np.testing.assert_allclose(t @ t.T, np.eye(r), atol=1e-13)
    # T spans exactly the subspace: projecting the subspace on T loses nothing.
    np.testing.assert_allclose(span - (span @ t.T) @ t, 0, atol=1e-13)
    # In the rotated coordinates the subspace is the first r rows.
    np.testing.assert_allclose(basis.rotate(span.T)[r:], 0, atol=1e-13)


def test_nearly_dependent_directions_stay_orthogonal_to_the_basis():
    # New directions 1e-7 away from the trace: Householder reflectors keep them orthogonal to it.
    n = 40
    basis = TraceBasis(n)
    first = rng.standard_normal((20, n))
    basis.extend(first, rtol=1e-9)
    near = first[:5] + 1e-7 * rng.standard_normal((5, n))
    sigma, k = basis.extend(near, rtol=1e-9)
    assert k == 5 and sigma[k - 1] > 1e-9
    t = basis.rows
    np.testing.assert_allclose(t @ t.T, np.eye(25), atol=1e-13)


def test_a_full_trace_takes_no_more_directions():
    n = 5
    basis = TraceBasis(n)
    assert basis.extend(rng.standard_normal((3, n)), rtol=1e-9)[1] == 3
    sigma, k = basis.extend(rng.standard_normal((4, n)), rtol=1e-9)  # wide residual: 2 × 4
    assert k == 2 and sigma.shape == (2,) and basis.rank == n
    assert basis.extend(rng.standard_normal((4, n)), rtol=1e-9)[1] == 0
