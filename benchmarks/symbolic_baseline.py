"""Same-run symbolic baseline: the reference notebooks' algorithm, re-implemented with sympy.

This is the yardstick `bench_counts.py` measures conflow against (MATH.md §1.6, "what the authors'
SageMath code does"). It is deliberately plain:

* φ is built as explicit sympy polynomials in the symbols θ_0..θ_{D−1}, with the same parameter
  layout and φ conventions as ``conflow/models/linear.py`` and ``conflow/models/relu.py``;
* the generators are the fields ∇φ_i (lists of D sympy expressions), W_0 = span{∇φ_i};
* levels W_{k+1} = W_k + [W_0, W_k]: every generator is bracketed symbolically (sympy ``diff``)
  with every field kept at the previous level, [u, v] = ∂v·u − ∂u·v;
* pointwise pruning: all fields are evaluated at ONE random point in [0,1)^D and a bracket is kept
  only if it raises ``numpy.linalg.matrix_rank`` of the kept values;
* stop when a level keeps nothing (or the rank reaches D, when nothing more can be kept);
* count = D − rank.

No known-laws target and no ``fast`` mode: the count is blind, like conflow's. It is slow on
purpose — it is the baseline, not a tool.

Usage: ``python benchmarks/symbolic_baseline.py relu 2,3,2 --bias [--seed 0] [--json]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence

import numpy as np
import sympy as sp

Field = list  # D sympy expressions


# --------------------------------------------------------------------------- symbolic φ


def _block(name: str, shape: tuple[int, ...], theta: list[sp.Symbol], start: int):
    """The next prod(shape) entries of θ as block ``name`` (row-major); returns (array, end)."""
    size = int(np.prod(shape)) if shape else 1
    syms = theta[start:start + size]
    arr = np.empty(shape, dtype=object)
    for s, idx in zip(syms, np.ndindex(*shape)):
        arr[idx] = s
    return arr, start + size


def _symbols(D: int) -> list[sp.Symbol]:
    return list(sp.symbols(f"t0:{D}", real=True))


def linear_phi(dims: Sequence[int]) -> tuple[list[sp.Symbol], list[sp.Expr]]:
    """θ = (U_1, …, U_q) row-major, U_i ∈ R^{n_{i−1}×n_i}; φ = vec(U_1 ⋯ U_q) row-major."""
    dims = list(dims)
    D = sum(dims[i - 1] * dims[i] for i in range(1, len(dims)))
    theta = _symbols(D)
    mats, pos = [], 0
    for i in range(1, len(dims)):
        arr, pos = _block(f"U{i}", (dims[i - 1], dims[i]), theta, pos)
        mats.append(sp.Matrix(arr.tolist()))
    prod = mats[0]
    for m in mats[1:]:
        prod = prod * m
    phi = [sp.expand(prod[r, c]) for r in range(prod.rows) for c in range(prod.cols)]
    return theta, phi


def relu_phi(dims: Sequence[int], bias: bool) -> tuple[list[sp.Symbol], list[sp.Expr]]:
    """Deep ReLU path-lifting.

    θ = (W_1, b_1, W_2, b_2, …, W_L) with W_l ∈ R^{n_l×n_{l−1}} row-major and b_l ∈ R^{n_l} for the
    hidden layers only (if ``bias``). φ = (every input→output path product W_1[j_1,i] W_2[j_2,j_1] ⋯
    W_L[o,j_{L−1}], indexed [i, j_1, …, o]; then for each hidden layer l = 1..L−1, if biased,
    b_l[j] × the weights on each path from neuron j of layer l to an output, indexed [j, …, o]).
    """
    dims = list(dims)
    L = len(dims) - 1
    D = sum(dims[l] * dims[l - 1] for l in range(1, L + 1)) + (sum(dims[1:-1]) if bias else 0)
    theta = _symbols(D)
    W, b, pos = {}, {}, 0
    for l in range(1, L + 1):
        W[l], pos = _block(f"W{l}", (dims[l], dims[l - 1]), theta, pos)
        if bias and l < L:
            b[l], pos = _block(f"b{l}", (dims[l],), theta, pos)
    assert pos == D

    def path_from(l: int, j: int, rest: tuple[int, ...]) -> sp.Expr:
        """Weights on the path j (layer l) → rest[0] (layer l+1) → … → rest[-1] (output)."""
        out, prev = sp.Integer(1), j
        for k, nxt in enumerate(rest, start=l + 1):
            out = out * W[k][nxt, prev]
            prev = nxt
        return out

    phi = []
    for i in range(dims[0]):
        for rest in itertools.product(*(range(n) for n in dims[1:])):
            phi.append(path_from(0, i, rest))
    if bias:
        for l in range(1, L):
            for j in range(dims[l]):
                for rest in itertools.product(*(range(n) for n in dims[l + 1:])):
                    phi.append(b[l][j] * path_from(l, j, rest))
    return theta, phi


def build_phi(kind: str, dims: Sequence[int], bias: bool = False):
    if kind == "linear":
        if bias:
            raise ValueError("linear nets have no bias option")
        return linear_phi(dims)
    if kind == "relu":
        return relu_phi(dims, bias)
    raise ValueError(f"unknown kind {kind!r} (linear or relu)")


# --------------------------------------------------------------------------- fields, brackets


def gradient(expr: sp.Expr, theta: list[sp.Symbol]) -> Field:
    return [sp.diff(expr, t) for t in theta]


def jacobian(field: Field, theta: list[sp.Symbol]) -> list[list[sp.Expr]]:
    """J[k][j] = ∂field_k/∂θ_j."""
    return [[sp.diff(f, t) if f != 0 else sp.Integer(0) for t in theta] for f in field]


def bracket(u: Field, ju, v: Field, jv) -> Field:
    """[u, v] = ∂v·u − ∂u·v, expanded (ju, jv: Jacobians of u, v)."""
    D = len(u)
    out = []
    for k in range(D):
        terms = [jv[k][j] * u[j] for j in range(D) if jv[k][j] != 0 and u[j] != 0]
        terms += [-ju[k][j] * v[j] for j in range(D) if ju[k][j] != 0 and v[j] != 0]
        out.append(sp.expand(sp.Add(*terms)))
    return out


def evaluate(field: Field, point: dict) -> np.ndarray:
    return np.array([float(f.xreplace(point)) for f in field], dtype=float)


# --------------------------------------------------------------------------- the trace


def symbolic_trace(kind: str, dims: Sequence[int], bias: bool = False, seed: int = 0) -> dict:
    """Run the reference algorithm; returns D, rank, n_laws, kept fields per level, seconds."""
    t0 = time.perf_counter()
    theta, phi = build_phi(kind, dims, bias)
    D = len(theta)
    rng = np.random.default_rng(seed)
    point = dict(zip(theta, (sp.Float(x) for x in rng.random(D))))  # one point in [0,1)^D

    gens = [gradient(p, theta) for p in phi]  # W_0 generators ∇φ_i
    gen_jac: list = [None] * len(gens)  # Jacobians, computed on first use

    values: list[np.ndarray] = []  # evaluated kept fields
    rank = 0

    def raises_rank(vec: np.ndarray) -> bool:
        nonlocal rank
        r = int(np.linalg.matrix_rank(np.array(values + [vec])))
        if r > rank:
            values.append(vec)
            rank = r
            return True
        return False

    # level 0: the generators themselves, pruned pointwise
    kept: list[tuple[Field, list]] = []
    for i, g in enumerate(gens):
        if rank < D and raises_rank(evaluate(g, point)):
            gen_jac[i] = jacobian(g, theta)
            kept.append((g, gen_jac[i]))
    kept_per_level = [len(kept)]

    # levels k+1: bracket every generator with every field kept at level k
    while kept and rank < D:
        new = []
        for v, jv in kept:
            for i, g in enumerate(gens):
                if rank >= D:
                    break
                if gen_jac[i] is None:
                    gen_jac[i] = jacobian(g, theta)
                w = bracket(g, gen_jac[i], v, jv)
                if all(e == 0 for e in w):
                    continue
                if raises_rank(evaluate(w, point)):
                    new.append((w, jacobian(w, theta)))
        kept = new
        kept_per_level.append(len(kept))

    return {
        "kind": kind,
        "dims": list(dims),
        "bias": bool(bias),
        "D": D,
        "d": len(phi),
        "rank": rank,
        "n_laws": D - rank,
        "kept_per_level": kept_per_level,
        "depth": len(kept_per_level) - 1,
        "seed": seed,
        "seconds": time.perf_counter() - t0,
    }


def symbolic_count(kind: str, dims: Sequence[int], bias: bool = False, seed: int = 0):
    """(number of conservation laws, seconds) by the reference symbolic algorithm."""
    t0 = time.perf_counter()
    res = symbolic_trace(kind, dims, bias, seed)
    return res["n_laws"], time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="sympy re-implementation of the reference count")
    p.add_argument("kind", choices=("linear", "relu"))
    p.add_argument("dims", help="comma-separated, e.g. 3,4,4,3")
    p.add_argument("--bias", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    dims = [int(x) for x in args.dims.split(",")]
    res = symbolic_trace(args.kind, dims, args.bias, args.seed)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{args.kind}{dims}{'+bias' if args.bias else ''}: D = {res['D']}, "
              f"{res['n_laws']} laws (rank {res['rank']}, kept per level {res['kept_per_level']}), "
              f"{res['seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
