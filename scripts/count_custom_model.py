"""Count the conservation laws of models given as plain JAX functions of a parameter pytree.

    python scripts/count_custom_model.py

Each φ below is a reparameterisation of a small network (MATH.md §1.3): the network output is a
function of φ(θ). Non-polynomial φ (tanh) go through the numeric engine only; polynomial ones can
also be counted exactly and cross-checked (method="both").
"""

import time

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np

import conflow as cf

jax.config.update("jax_enable_x64", True)  # this script's own arrays in float64 too


def main() -> None:
    cases = [
        # two-layer linear net written by hand: same count as the built-in linear([3, 4, 2])
        ("U V (hand-written)", lambda p: p["U"] @ p["V"],
         {"U": np.zeros((3, 4)), "V": np.zeros((4, 2))}, "both"),
        # a scalar non-polynomial φ: one generator, so D − 1 laws
        ("tanh(Σx)·exp(x0)", lambda p: jnp.tanh(p["x"].sum()) * jnp.exp(p["x"][0]),
         {"x": np.zeros(5)}, "numeric"),
        # a tanh layer followed by a linear read-out, seen through φ = aᵀ tanh(W)
        ("aᵀ tanh(W)", lambda p: jnp.tanh(p["W"]).T @ p["a"],
         {"W": np.zeros((4, 3)), "a": np.zeros(4)}, "numeric"),
        # a nested pytree: parameter names follow the paths (layers[0].w, ...)
        ("nested pytree", lambda p: p["layers"][0]["w"] @ p["layers"][1]["w"],
         {"layers": [{"w": np.zeros((2, 3))}, {"w": np.zeros((3, 2))}]}, "both"),
    ]
    for label, phi, params, method in cases:
        model = cf.custom(phi, params, name=label)
        t0 = time.perf_counter()
        result = cf.count_laws(model, method=method)
        print(f"{label:<22} D={model.D:<3} laws={result.n_laws}  status={result.status}  "
              f"method={method}  {time.perf_counter() - t0:.2f} s")
        print("   first parameters:", ", ".join(model.param_names[:4]), "...")


if __name__ == "__main__":
    main()
