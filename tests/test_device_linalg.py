"""The device-resident level loop (``linalg="device"``) against the host's LAPACK loop.

Both cut every stack by its singular values inside the same band; the device keeps each point's
trace as orthonormal rows (CGS2 + one batched SVD), the host as complement bases (dense) or
Householder reflectors (streamed). Their σ's agree to rounding, so their ranks agree level by
level. Under ``jax.transfer_guard("disallow")`` every host↔device copy of a whole count must be
explicit, and in the device loop only σ's (at most P × n numbers per stack) come back.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.engine import trace as trace_module
from conflow.engine.trace import lie_trace


def _custom():
    # φ(x, y) = (x0 x1, x1 x2 + y0): a model given as code
    return cf.custom(lambda p: jnp.stack([p["x"][0] * p["x"][1], p["x"][1] * p["x"][2] + p["y"][0]]),
                     {"x": np.zeros(3), "y": np.zeros(1)})


CASES = {
    "linear": (lambda: cf.linear([2, 3, 3, 2]), None),
    "relu+bias": (lambda: cf.relu([3, 4, 2], bias=True), None),
    "product": (lambda: cf.product(4), None),
    "momentum": (lambda: cf.linear([2, 2, 2]), cf.MomentumFlow(0.5)),
    "nmf entropy": (lambda: cf.nmf(2, 2, 2), cf.GradientFlow(metric="entropy")),
    "custom": (_custom, None),
}


@pytest.mark.parametrize("case, algorithm", [(case, "dense") for case in CASES] + [
    (case, "streamed") for case in ("linear", "relu+bias", "momentum")])
def test_device_and_host_cut_the_same_ranks(case, algorithm):
    make, flow = CASES[case]
    model, flow = make(), flow or cf.GradientFlow()
    family, points = flow.family(model), flow.sample_points(model, 0, 3)
    host, device = (lie_trace(family, points, algorithm=algorithm, block=8, linalg=linalg)
                    for linalg in ("host", "device"))
    assert (host.linalg, device.linalg) == ("host", "device")
    assert host.status == device.status == "ok", (host.reason, device.reason)
    assert host.ranks == device.ranks
    assert host.dim == device.dim
    # the same σ's up to rounding: both gaps are clean
    assert min(host.gap, device.gap) > 1e8


@pytest.mark.parametrize("algorithm", ["dense", "streamed"])
def test_whole_counts_make_only_explicit_transfers(monkeypatch, algorithm):
    monkeypatch.setenv(trace_module.LINALG_ENV, "device")
    for model, flow in [(cf.linear([2, 3, 2]), None), (cf.relu([3, 4, 2], bias=True), None),
                        (cf.linear([2, 2, 2]), cf.MomentumFlow(0.5))]:
        with jax.transfer_guard("disallow"):
            count = cf.count_laws(model, flow, method="numeric", algorithm=algorithm)
        assert count.status == "ok"
        assert count.trace.linalg == "device"


def test_only_singular_values_leave_the_device(monkeypatch):
    """The device loop brings back σ's (P × min(S, n) per stack), never a stack (P × S × n)."""
    model = cf.linear([4, 5, 5, 3])
    flow = cf.GradientFlow()
    family, points = flow.family(model), flow.sample_points(model, 0, 3)
    lie_trace(family, points, linalg="device")  # compile outside the record
    sizes = []
    device_get = jax.device_get

    def recording(x):
        sizes.extend(np.size(leaf) for leaf in jax.tree_util.tree_leaves(x))
        return device_get(x)

    monkeypatch.setattr(jax, "device_get", recording)
    result = lie_trace(family, points, linalg="device")
    P, n = points.shape
    assert result.status == "ok" and sizes
    assert max(sizes) <= P * n < P * n * n // 4


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_device_bases_stay_orthonormal_and_tight(monkeypatch, backend):
    """Stacks of random rows cut one after another: each point's basis is orthonormal, spans
    the rows it kept, is zero past its rank, and its capacity (the rows every projection runs
    over) stays within 25 % of the largest rank on CPUs; on accelerators it at least doubles
    (fewer optimised programs to compile)."""
    from conflow.engine import device_basis
    from conflow.engine.device_basis import DeviceBases, bucket

    assert [bucket(k, 4) for k in (1, 5, 9, 100, 2561)] == [1, 5, 10, 112, 3072]
    assert [bucket(k) for k in (7, 9, 100, 2561)] == [7, 9, 104, 2816]
    monkeypatch.setattr(device_basis, "FULL_CAPACITY_FLOATS", 0)  # grow from the start
    monkeypatch.setattr(jax, "default_backend", lambda: backend)  # its programs run on CPU
    capacities = []
    rng = np.random.default_rng(0)
    P, n = 2, 40
    bases = DeviceBases(P, n, "float64")
    kept = [np.zeros((0, n)) for _ in range(P)]
    for size in (7, 9, 12):
        rows = rng.standard_normal((P, size, n))
        sigma, beta, finite = bases.spectrum(jnp.asarray(rows[:, :, None]),
                                             jnp.ones((P, size, 1)), generators=False)
        assert finite and sigma.shape == (P, size) and np.all(sigma[:, -1] > 1e-3)
        added = np.array([size, size - 2])  # the second point keeps all but its weakest two
        bases.extend(added, [np.zeros(int(r + k)) for r, k in zip(bases.ranks, added)])
        kept = [np.vstack([k, r]) for k, r in zip(kept, rows)]
        capacities.append(bases.capacity)
    top = [int(r) for r in np.cumsum([7, 9, 12])]  # the largest rank after each stack
    assert capacities == ([bucket(r, 4) for r in top] if backend == "cpu" else [7, 16, 32])
    basis = np.asarray(bases._basis)
    for p, rank in enumerate(bases.ranks):
        b = basis[p, :rank]
        np.testing.assert_allclose(b @ b.T, np.eye(rank), atol=1e-12)
        assert not basis[p, rank:].any()
        if p == 0:  # kept everything: the basis spans every row given
            np.testing.assert_allclose(kept[p] - kept[p] @ b.T @ b, 0.0, atol=1e-10)


def test_linalg_is_checked():
    model = cf.linear([2, 2, 2])
    family, points = cf.GradientFlow().family(model), cf.GradientFlow().sample_points(model, 0, 3)
    with pytest.raises(cf.InputError, match="unknown linalg"):
        lie_trace(family, points, linalg="gpu")


def test_linalg_environment_variable(monkeypatch):
    monkeypatch.setenv(trace_module.LINALG_ENV, "device")
    assert trace_module.default_linalg() == "device"
    monkeypatch.setenv(trace_module.LINALG_ENV, "tpu")
    with pytest.raises(cf.InputError, match="CONFLOW_LINALG must be host or device"):
        trace_module.default_linalg()


@pytest.mark.parametrize("linalg", ["host", "device"])
def test_time_limit_stops_between_levels_and_keeps_them(monkeypatch, linalg):
    model = cf.linear([3, 4, 4, 3])
    flow = cf.GradientFlow()
    family, points = flow.family(model), flow.sample_points(model, 0, 3)
    # the engine's clock: 0 s at the start and at depth 0's check, 10 s from then on
    ticks = iter([0.0, 0.0])
    monkeypatch.setattr(trace_module, "time",
                        types.SimpleNamespace(perf_counter=lambda: next(ticks, 10.0)))
    result = lie_trace(family, points, linalg=linalg, time_limit=5.0)
    assert result.status == "not_converged"
    assert result.reason == "time limit of 5 s reached before depth 1"
    assert result.dim is None
    assert [level.depth for level in result.levels] == [0]  # the level done is kept
    with pytest.raises(cf.InputError, match="time_limit"):
        lie_trace(family, points, time_limit=-1)


@pytest.mark.parametrize("linalg", ["host", "device"])
def test_time_limit_stops_between_blocks(monkeypatch, linalg):
    model = cf.linear([3, 4, 4, 3])
    flow = cf.GradientFlow()
    family, points = flow.family(model), flow.sample_points(model, 0, 3)
    ticks = iter([0.0, 0.0])  # the limit passes during the first block of depth 0
    monkeypatch.setattr(trace_module, "time",
                        types.SimpleNamespace(perf_counter=lambda: next(ticks, 10.0)))
    result = lie_trace(family, points, linalg=linalg, algorithm="streamed", block=8,
                       time_limit=5.0)
    assert result.status == "not_converged"
    assert result.reason == "time limit of 5 s reached during depth 0 (its blocks so far kept)"
    assert len(result.levels) == 1 and result.levels[0].samples == 8


def test_equal_shapes_reuse_the_compiled_programs():
    """Counting another net of the same shapes (as `reproduce` does) compiles nothing new."""
    from conflow.engine import evaluate

    first = cf.count_laws(cf.relu([3, 5, 2]), method="numeric")
    before = evaluate._stage_evaluator.cache_info()
    second = cf.count_laws(cf.relu([3, 5, 2]), method="numeric", seed=1)
    after = evaluate._stage_evaluator.cache_info()
    assert first.status == second.status == "ok" and first.n_laws == second.n_laws == 5
    assert after.misses == before.misses and after.hits > before.hits


def test_compiled_programs_are_dropped_under_map_pressure(monkeypatch):
    """XLA maps three pages per compiled kernel; past MAP_PRESSURE of the kernel's limit the
    bracket programs are dropped before the next trace (16 deep linear counts in one process
    once crashed LLVM), and counting goes on."""
    from conflow.engine import evaluate

    if evaluate._map_counts() is None:
        pytest.skip("no /proc (not Linux)")
    model = cf.linear([2, 3, 2])
    assert cf.count_laws(model, method="numeric").n_laws == 6  # n(n+1)/2, n = 3
    assert evaluate._stage_evaluator.cache_info().currsize > 0
    assert not evaluate.relieve_map_pressure()  # far below the limit
    monkeypatch.setattr(evaluate, "MAP_PRESSURE", 0.0)
    assert evaluate.relieve_map_pressure()
    assert evaluate._stage_evaluator.cache_info().currsize == 0 and not evaluate._SHARED_FIELDS
    assert cf.count_laws(model, method="numeric").n_laws == 6  # n(n+1)/2, n = 3
