"""Count the conservation laws of a small transformer block, with timings.

    python scripts/transformer_block.py

The block (`conflow.transformer`): Y = X + Attn(X), Z = Y + relu(Y Vᵀ) Uᵀ (token-wise MLP), on
sequences of 3 tokens of width dim, no normalisation. It has no finite φ simpler than its
outputs, so it is counted from its output gradients on generic input sequences
(`count_laws_from_model`, rerun with twice the inputs). For comparison:

- the block laws (MATH.md §2.9, P3 Thm 4.6): Q_hQ_hᵀ − K_hK_hᵀ and V_hV_hᵀ − O_hO_hᵀ per head, and
  ‖V[j,:]‖² − ‖U[:,j]‖² per MLP neuron: d1(d1 + 1) per head + hidden, when d1 ≤ 2·dim;
- the same parts counted separately: attention through φ = (QᵀK, VᵀO), the MLP as a token-wise
  ReLU net on the same kind of sequences.

A count above the block laws would mean laws coupling the blocks across the skip connections
(P3 Thm 4.7 excludes them for such layers).
"""

import time
import warnings

import jax
import numpy as np

import conflow as cf
from conflow.models.residual import TRANSFORMER_TOKENS
from conflow.reference.closed_forms import known_count

jax.config.update("jax_enable_x64", True)  # this script's own arrays in float64 too


def mlp_tokens(params, x):
    """The MLP part alone, token-wise, with its residual: x + relu(x Vᵀ) Uᵀ."""
    return x + jax.nn.relu(x @ params["V"].T) @ params["U"].T


def main() -> None:
    warnings.simplefilter("always", cf.InputsWarning)
    rows = []
    for dim, d1, hidden, heads in [(3, 2, 3, 1), (4, 2, 4, 1), (4, 2, 4, 2), (6, 3, 8, 1)]:
        t0 = time.perf_counter()
        block = cf.count_laws_from_model(cf.transformer(dim, d1, hidden, heads))
        t_block = time.perf_counter() - t0
        t0 = time.perf_counter()
        attn = cf.count_laws(cf.attention(dim, d1, heads))
        mlp = cf.count_laws_from_model(
            mlp_tokens, {"V": np.zeros((hidden, dim)), "U": np.zeros((dim, hidden))},
            input_shape=(TRANSFORMER_TOKENS, dim), name="mlp-block")
        t_parts = time.perf_counter() - t0
        rows.append((block, attn, mlp, t_block, t_parts))
        m = block.model
        print(f"{m.label:<34} D={m.D:<4} block laws (closed form) {known_count(m):<4} "
              f"counted {block.n_laws} ({block.status}, "
              f"{'stable' if block.stable else 'UNSTABLE'} {block.report.n_inputs}→"
              f"{block.report.n_inputs_checked} inputs) {t_block:.1f}s | parts: attention "
              f"{attn.n_laws} + MLP {mlp.n_laws} = {attn.n_laws + mlp.n_laws}  {t_parts:.1f}s",
              flush=True)
    print("\nOne report in full:")
    print(rows[1][0].summary())


if __name__ == "__main__":
    main()
