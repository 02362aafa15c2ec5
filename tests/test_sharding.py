"""Sharded bracket batches give the same counts as one device (4 forced host devices).

The device count is fixed when JAX starts, so the comparison runs in a fresh interpreter with
XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, jax, conflow as cf
assert jax.device_count() == 4, jax.devices()
out = {}
for label, model, flow in [
    ("linear", cf.linear([2, 3, 3, 2]), None),
    ("relu", cf.relu([3, 4, 2], bias=True), None),
    ("momentum", cf.linear([2, 2, 2]), cf.MomentumFlow(0.5)),
]:
    one = cf.count_laws(model, flow, method="numeric", devices=1)
    four = cf.count_laws(model, flow, method="numeric", devices=4)
    out[label] = [one.n_laws, four.n_laws, one.trace.ranks, four.trace.ranks, one.status,
                  four.status, one.gap, four.gap]
    # The streamed (memory-bounded) engine, in blocks small enough to need several per level.
    flow = flow or cf.GradientFlow()
    if label == "momentum":  # on 4 devices: its dense count above (streamed: test_streamed)
        continue
    z = flow.sample_points(model, 0, 3)
    one, four = (cf.lie_trace(flow.family(model), z, algorithm="streamed", block=8, devices=d)
                 for d in (1, 4))
    n = flow.state_dim(model)
    out["streamed " + label] = [n - one.dim, n - four.dim, one.ranks, four.ranks, one.status,
                                four.status, one.gap, four.gap]
    # The traces on the devices: the 3 points split over 4 devices (padded), whole levels and
    # blocks.
    for algorithm in ("dense", "streamed") if label == "linear" else ():
        one, four = (cf.lie_trace(flow.family(model), z, algorithm=algorithm, block=8, devices=d,
                                  linalg="device") for d in (1, 4))
        out[f"device {algorithm} " + label] = [n - one.dim, n - four.dim, one.ranks, four.ranks,
                                               one.status, four.status, one.gap, four.gap]
# A costly sampled model: level 0 from its generator matrices, levels 1 and 2 in two stages.
import numpy as np
import conflow.engine.evaluate as ev
ev.COSTLY_FIELD_ENTRIES = 0
sampled = cf.from_model(lambda p, x: p["V"] @ jax.nn.relu(p["W"] @ x + p["b"]),
                        {"W": np.zeros((3, 2)), "b": np.zeros(3), "V": np.zeros((1, 3))},
                        input_shape=(2,))
one, four = (cf.count_laws(sampled, method="numeric", devices=d) for d in (1, 4))
out["sampled"] = [one.n_laws, four.n_laws, one.trace.ranks, four.trace.ranks, one.status,
                  four.status, one.gap, four.gap]
print(json.dumps(out))
"""


def test_four_devices_give_the_same_counts_as_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {"linear": 12, "relu": 4, "momentum": 1, "sampled": 3}
    for label, (n1, n4, r1, r4, s1, s4, g1, g4) in out.items():
        assert s1 == s4 == "ok"
        assert n1 == n4 == expected[label.split()[-1]]
        assert r1 == r4  # identical rank per level and point
        assert g1 > 1e8 and g4 > 1e8


def test_bad_device_count_is_named():
    import pytest

    import conflow as cf
    from conflow.errors import InputError

    with pytest.raises(InputError, match="devices must be between 1 and"):
        cf.count_laws(cf.linear([2, 2, 2]), method="numeric", devices=99)
