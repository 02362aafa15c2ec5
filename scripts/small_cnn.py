"""Count the conservation laws of a convolutional block and of a small CNN, with timings.

    python scripts/small_cnn.py [--equinox]

1. The conv-ReLU-conv block (MATH.md §2.5, P3 Thm 3.6) through its path-lifting φ = (u_j v_jᵀ)_j
   (built-in `conflow.conv`), numeric and exact engines cross-checked; then the block itself on
   generic signals (`count_laws_from_model`). Expected: c1 laws, one per hidden channel.
2. A small 1-D CNN written in plain JAX: conv(c0→c1) → ReLU → conv(c1→c2) → ReLU → flatten →
   dense(n_classes), optional per-channel biases, counted from its outputs on generic signals.
   Comparison value: one rescaling law per hidden channel (c1 + c2), the ReLU-net count with
   channels as neurons. Nothing guarantees there are no more; the count says.
   The first row, c = (1, 2, 2), is reported ambiguous: second-layer channels see only the two
   non-negative first-layer channels, and at one generic point some of their positions never
   switch over the sample (the warning says so) — the generic points then see different local
   counts, and conflow says so instead of picking one.
3. With ``--equinox``: the CNN of row 2 as an Equinox module (eqx.nn.Conv1d). Slow: lax.conv runs
   slowly under the engine's -O0 compilation of small states (measured 67 s for 64 signals, 11 s
   with the default XLA optimisation level); `conflow.models.conv.conv1d` (patches + einsum) is
   the fast way to write a 1-D convolution for conflow.
"""

import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import conflow as cf
from conflow.models import conv_apply, conv_params
from conflow.models.conv import conv1d

jax.config.update("jax_enable_x64", True)  # this script's own arrays in float64 too

LENGTH = 10  # signal length


def cnn_params(c0, c1, c2, k, n_classes, bias, seed=0):
    rng = np.random.default_rng(seed)
    length2 = LENGTH - 2 * (k - 1)
    p = {"conv1": {"w": rng.standard_normal((c1, c0, k))},
         "conv2": {"w": rng.standard_normal((c2, c1, k))},
         "head": {"w": rng.standard_normal((n_classes, c2 * length2))}}
    if bias:
        p["conv1"]["b"] = rng.standard_normal(c1)
        p["conv2"]["b"] = rng.standard_normal(c2)
    return p


def cnn_apply(p, x):
    """x (c0, LENGTH) → logits (n_classes,)."""
    h = x
    for layer in ("conv1", "conv2"):
        h = conv1d(h, p[layer]["w"])
        if "b" in p[layer]:
            h = h + p[layer]["b"][:, None]
        h = jax.nn.relu(h)
    return p["head"]["w"] @ h.ravel()


def main() -> None:
    warnings.simplefilter("always", cf.InputsWarning)
    print("1. conv block c0 → c1 → c2 (filters n_v, n_u)")
    for c0, c1, c2, k in [(2, 3, 2, 3), (3, 4, 2, 3), (3, 8, 4, 5)]:
        t0 = time.perf_counter()
        model = cf.conv(c0, c1, c2, k, k)
        phi = cf.count_laws(model, method="both")
        t_phi = time.perf_counter() - t0
        t0 = time.perf_counter()
        block = cf.count_laws_from_model(conv_apply, conv_params(c0, c1, c2, k),
                                         input_shape=(c0, LENGTH))
        t_block = time.perf_counter() - t0
        print(f"  {model.label:<18} D={model.D:<4} c1={c1}  φ-based {phi.n_laws} ({phi.status}, "
              f"numeric+exact) {t_phi:.2f}s | block on {block.report.n_inputs_checked} signals "
              f"{block.n_laws} ({'stable' if block.stable else 'UNSTABLE'}) {t_block:.2f}s",
              flush=True)

    print("\n2. small CNN: conv → relu → conv → relu → dense, signals of length", LENGTH)
    last = None
    for c0, c1, c2, k, n_classes, bias in [(1, 2, 2, 3, 2, False), (2, 3, 2, 3, 3, False),
                                           (2, 3, 2, 3, 3, True), (3, 4, 4, 3, 4, True)]:
        t0 = time.perf_counter()
        res = cf.count_laws_from_model(cnn_apply, cnn_params(c0, c1, c2, k, n_classes, bias),
                                       input_shape=(c0, LENGTH), name="cnn")
        dt = time.perf_counter() - t0
        stats = res.report.patterns
        print(f"  c=({c0},{c1},{c2}) k={k} classes={n_classes} bias={bias!s:<5} D={res.model.D:<4} "
              f"laws {res.n_laws} ({res.status}, {'stable' if res.stable else 'UNSTABLE'} "
              f"{res.report.n_inputs}→{res.report.n_inputs_checked} signals; "
              f"{stats[0].n_switches} ReLU switches) vs c1 + c2 = {c1 + c2}   {dt:.1f}s",
              flush=True)
        last = res
    print("\nOne report in full:")
    print(last.summary())

    if "--equinox" not in sys.argv[1:]:
        return
    import equinox as eqx

    print("\n3. the CNN of row 2 as an Equinox module (eqx.nn.Conv1d uses lax.conv), 64 signals")

    class CNN(eqx.Module):
        conv1: eqx.nn.Conv1d
        conv2: eqx.nn.Conv1d
        head: eqx.nn.Linear

        def __init__(self, key):
            k1, k2, k3 = jax.random.split(key, 3)
            self.conv1 = eqx.nn.Conv1d(2, 3, 3, use_bias=False, key=k1)
            self.conv2 = eqx.nn.Conv1d(3, 2, 3, use_bias=False, key=k2)
            self.head = eqx.nn.Linear(2 * (LENGTH - 4), 3, use_bias=False, key=k3)

        def __call__(self, x):
            h = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))
            return self.head(jnp.ravel(h))

    t0 = time.perf_counter()
    res = cf.count_laws_from_model(CNN(jax.random.PRNGKey(0)), input_shape=(2, LENGTH),
                                   n_inputs=64, name="eqx-cnn")
    print(f"  parameters: {', '.join(b.name for b in res.model.blocks)}")
    print(f"  laws {res.n_laws} ({res.status}, {'stable' if res.stable else 'UNSTABLE'}), "
          f"{time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
