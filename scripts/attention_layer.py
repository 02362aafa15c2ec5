"""Count the conservation laws of one attention layer, two ways, with timings.

    python scripts/attention_layer.py

1. φ-based (built-in `attention`): generators ∇ of φ = (Q_hᵀK_h, V_hᵀO_h) per head (MATH.md §2.7),
   counted numerically and exactly (method="both" cross-checks the two engines);
2. the layer itself, softmax(X QᵀK Xᵀ) X Vᵀ O on sequences of 3 tokens, through
   `count_laws_from_model` (generators = output gradients on generic input sequences, rerun with
   twice the inputs).

Expected (derived in MATH.md §2.7 from P3 Thm 3.8): d1(d1 + 1) laws per head when d1 ≤ 2·dim,
2(2·dim·d1 − dim(2·dim − 1)) per head otherwise.
"""

import time
import warnings

import conflow as cf
from conflow.models import attention_apply, attention_params
from conflow.reference.closed_forms import known_count
from conflow.reference.gradient_laws import expected_count

TOKENS = 3


def main() -> None:
    warnings.simplefilter("always", cf.InputsWarning)
    print(f"{'layer':<22}{'D':>4} {'expected':>8} {'closed':>7} {'φ-based':>8} {'time':>7}"
          f" {'layer on inputs':>16} {'2N':>7} {'time':>7}")
    for dim, d1, heads in [(4, 2, 1), (4, 4, 1), (2, 5, 1), (4, 2, 2), (8, 4, 1)]:
        model = cf.attention(dim, d1, heads)
        t0 = time.perf_counter()
        phi_count = cf.count_laws(model, method="both")
        t_phi = time.perf_counter() - t0
        t0 = time.perf_counter()
        layer = cf.count_laws_from_model(attention_apply, attention_params(dim, d1, heads),
                                         input_shape=(TOKENS, dim), name="attention-layer",
                                         input_radius=1.0)  # smooth: no kinks to reach
        t_layer = time.perf_counter() - t0
        stable = "" if layer.stable else " (unstable)"
        print(f"{model.label:<22}{model.D:>4} {expected_count(dim, d1, heads):>8} "
              f"{known_count(model):>7} {str(phi_count.n_laws):>8} {t_phi:>6.2f}s "
              f"{str(layer.n_laws) + stable:>16} {layer.report.n_inputs_checked:>7} "
              f"{t_layer:>6.2f}s")
    print("\nφ-based: count_laws(attention(dim, d1, heads), method='both'); layer: the softmax "
          f"layer on {TOKENS}-token sequences, counted on N and on 2N generic input sequences.")
    print("\nOne report in full:")
    print(layer.summary())


if __name__ == "__main__":
    main()
