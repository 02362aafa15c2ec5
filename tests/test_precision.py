"""float64 scoped to conflow's own calls: importing conflow leaves the process's
``jax_enable_x64`` alone, and conflow's results are float64 all the same (`conflow.precision`).

Runs in a fresh interpreter: the test process itself enables x64 (tests/conftest.py)."""

import json
import subprocess
import sys

SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
import conflow as cf

out = {"x64_after_import": bool(jax.config.jax_enable_x64)}
# a count whose gap is only visible in float64: the 1e-10 term of issue 13
m = cf.custom(lambda p: jnp.stack([p["x"][0] * p["x"][1],
                                   p["x"][0] * p["x"][1] + 1e-10 * p["x"][2]]), {"x": np.zeros(3)})
c = cf.count_laws(m, method="numeric")
out["custom"] = [c.status, c.n_laws]
c = cf.count_laws(cf.relu([3, 5, 5, 2], bias=True), method="numeric")
out["relu"] = [c.status, c.n_laws]
lin = cf.linear([2, 3, 2])
basis = cf.polynomial_laws(lin, None, 2)
out["laws"] = [basis.status, basis.n_laws]
params = lin.init_params(0)
out["params_dtype"] = str(params["U1"].dtype)
out["verdict"] = cf.verify_law(
    lin, None, lambda p: (p["U1"].T @ p["U1"] - p["U2"] @ p["U2"].T)[0, 1]).verdict
res = cf.simulate(lin, "gradient", params, (np.ones((4, 2)), np.ones((4, 2))), 1.0,
                  monitors=[basis.laws[0]])
values = res.values[basis.laws[0].label]
out["monitor"] = [str(values.dtype), float(np.ptp(values))]
out["user_dtype"] = str(jnp.ones(2).dtype)
out["x64_after_calls"] = bool(jax.config.jax_enable_x64)
print(json.dumps(out))
"""


def test_conflow_computes_in_float64_without_switching_the_callers_jax():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["x64_after_import"] is False and out["x64_after_calls"] is False
    assert out["user_dtype"] == "float32"  # the caller's own arrays are untouched
    assert out["custom"] == ["ok", 1]  # a float32 engine cannot see the 1e-10 direction
    assert out["relu"] == ["ok", 10]
    assert out["laws"] == ["ok", 6] and out["params_dtype"] == "float64"
    assert out["verdict"] == "conserved"
    assert out["monitor"][0] == "float64" and out["monitor"][1] < 1e-7
