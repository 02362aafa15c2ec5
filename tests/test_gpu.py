"""Checks that need a GPU (skipped without one; run by `benchmarks/gpu_check.sh`).

- counts on the GPU (levels cut on the device) equal counts on the CPU (levels cut by LAPACK on
  the host), level by level;
- whole counts make no implicit host↔device transfer (``jax.transfer_guard("disallow")``), and
  the level loop brings back only σ's;
- float64 by default on the device; float32 on request warns and says so.
"""

import warnings

import jax
import numpy as np
import pytest

import conflow as cf
from conflow.engine.trace import lie_trace

GPUS = [d for d in jax.devices() if d.platform == "gpu"]
pytestmark = pytest.mark.skipif(not GPUS, reason="no GPU")

MODELS = [
    ("linear 3,4,4,3", lambda: cf.linear([3, 4, 4, 3]), None, "dense"),
    ("relu 3,4,2 +bias", lambda: cf.relu([3, 4, 2], bias=True), None, "dense"),
    ("momentum linear 2,3,2", lambda: cf.linear([2, 3, 2]), cf.MomentumFlow(0.5), "dense"),
    ("linear 20,10,20 streamed", lambda: cf.linear([20, 10, 20]), None, "streamed"),
    ("relu 12,12,12,4 streamed", lambda: cf.relu([12, 12, 12, 4]), None, "streamed"),
]


@pytest.mark.parametrize("label,make,flow,algorithm", MODELS, ids=[m[0] for m in MODELS])
def test_counts_on_gpu_equal_counts_on_cpu(label, make, flow, algorithm):
    model, flow = make(), flow or cf.GradientFlow()
    points = np.asarray(flow.sample_points(model, 0, 3))
    family = flow.family(model)
    gpu = lie_trace(family, points, algorithm=algorithm, block=64, linalg="device", devices=1)
    with jax.default_device(jax.devices("cpu")[0]):
        cpu = lie_trace(family, points, algorithm=algorithm, block=64, linalg="host", devices=1)
    assert gpu.status == cpu.status == "ok", (gpu.reason, cpu.reason)
    assert gpu.ranks == cpu.ranks, label
    assert gpu.dtype == "float64"


@pytest.mark.parametrize("algorithm", ["dense", "streamed"])
def test_whole_counts_make_no_implicit_transfer(algorithm):
    for model, flow in [(cf.linear([3, 4, 3]), None), (cf.relu([3, 4, 2], bias=True), None),
                        (cf.linear([2, 2, 2]), cf.MomentumFlow(0.5))]:
        with jax.transfer_guard("disallow"):
            count = cf.count_laws(model, flow, method="numeric", algorithm=algorithm)
        assert count.status == "ok", count.summary()
        assert count.trace.linalg == "device"


def test_only_singular_values_leave_the_gpu(monkeypatch):
    model = cf.linear([6, 8, 6])
    flow = cf.GradientFlow()
    family, points = flow.family(model), flow.sample_points(model, 0, 3)
    lie_trace(family, points)
    sizes = []
    device_get = jax.device_get

    def recording(x):
        sizes.extend(np.size(leaf) for leaf in jax.tree_util.tree_leaves(x))
        return device_get(x)

    monkeypatch.setattr(jax, "device_get", recording)
    result = lie_trace(family, points)
    assert result.status == "ok" and result.linalg == "device"
    assert max(sizes) <= points.shape[0] * points.shape[1]


def test_float32_on_request_warns_and_reports_it():
    model = cf.linear([2, 3, 2])
    flow = cf.GradientFlow()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = lie_trace(flow.family(model), flow.sample_points(model, 0, 3), dtype="float32")
    assert result.dtype == "float32"
    assert any("float32" in str(w.message) for w in caught)
