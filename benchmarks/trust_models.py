"""Models as users write them, with expected law counts from closed forms (issue 13, item 8).

Shared by ``tests/test_trust.py`` (through ``tests/conftest.py``) and ``benchmarks/bench_trust.py``
so that both use ONE copy of the expected values. Nothing here asks the engine under test for an
expected value: every count comes from a closed form, checked where noted by an independent
computation (the exact engine, certified modulo two primes, in ``tests/test_trust.py``).

Kinds (ids are readable, e.g. ``eqx-relu-bias-[3,5,5,2]``):

- ``eqx-mlp`` / ``nnx-mlp``: ``eqx.nn.MLP`` and a small Flax NNX module of ``nnx.Linear`` layers,
  counted with ``cf.count_laws_from_model(net, input_shape=(n_in,))``. dims = [in, h_1..h_k, out],
  activation in `ACTIVATIONS`, biases on every layer or on none.
- ``eqx-conv1d`` / ``eqx-conv2d``: ``Conv1d``/``Conv2d`` + ReLU + flatten + ``Linear``.
- ``linear`` / ``relu``: the built-ins ``cf.linear(dims)``, ``cf.relu(dims, bias=)``.
- ``adv-*``: adversarial generator families through ``cf.custom`` (`ADVERSARIAL`).

Expected counts (MATH.md §2.2–2.5):

- ReLU, leaky ReLU (positively homogeneous): one law per hidden neuron, ‖in_j‖² + b_j² − ‖out_j‖²,
  with or without biases (P3 Prop 3.5 for two layers; the reference notebooks' 50 random deep nets
  for depth). Caveat avoided by construction: inputs ≥ 2 (a bias-free net with ONE input has all
  hyperplanes equal to {0} and D − 2 laws, `conflow.from_model`). Caveat NOT avoidable by the
  choice of dims (the ``--scalar`` slice of 1-D inputs keeps bias-free ReLU nets to [1, h, 1],
  whose D − 2 laws `mlp_expected` derives), for nets with two or more hidden layers: the count is that of the region of θ
  where every unit switches on the inputs that reach it. A unit of the second or later hidden
  layer can stay in one regime for EVERY input (dead; always on; for leaky ReLU, always on one
  slope), on an open set of θ: at a standard Gaussian θ some ReLU unit is dead with probability
  7–90 % (Monte Carlo, [4,6,6,2] … [2,8,8,8,8,2]). There the network has more laws (a dead
  unit's weights are laws; two units of a layer that are both linear give a GL(2) instead of two
  rescalings).
  A unit that switches only on a sliver of inputs is missed by a finite sample, whose count is
  then too high. An engine must count the switching region (e.g. by redrawing such points or
  adding inputs) or say ``ambiguous``; a confident count of another region is reported as wrong.
- GELU, tanh, softplus: 0 laws (no continuous symmetry: such nets are locally identifiable, the
  output gradients span R^D at generic θ).
- identity: a deep linear map, `linear_formula`; with biases an affine map, `affine_formula`.
- conv + ReLU + dense: one law per hidden CHANNEL (the rescaling symmetry of a channel is shared by
  all its positions; MATH.md §2.5). Checked in the tests against the exact engine on the
  path-lifting φ of the same net, and by eye on the numeric spectrum (see `test_trust.py`).
- ``linear``: `linear_formula` (checked against `conflow.reference.closed_forms.known_count`); ``relu``: hidden
  neurons.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import numpy as np

ACTIVATIONS = ("relu", "leaky_relu", "gelu", "tanh", "softplus", "identity")
HOMOGENEOUS = ("relu", "leaky_relu")
SMOOTH = ("gelu", "tanh", "softplus")
#: Classifier heads an MLP may end with (`head_laws`): jax.nn functions of the logits.
HEADS = ("softmax", "log_softmax")


# ------------------------------------------------------------------------------------------------
# closed forms
# ------------------------------------------------------------------------------------------------


def hidden_neurons(dims) -> int:
    """Σ of the hidden widths: the count of a ReLU / leaky-ReLU net (MATH.md §2.4)."""
    return int(sum(dims[1:-1]))


def layer_laws(r: int, p: int) -> int:
    """Laws of one hidden layer of width r whose neighbours have p = n_{i−1} + n_{i+1} units:
    r(r+1)/2 if r ≤ p, else p r − p(p−1)/2 (MATH.md §2.2 and the per-layer pattern of §2.3),
    i.e. N = p r − [p(p−1)/2 − (p−k)(p−k−1)/2] with k = min(r, p)."""
    k = min(r, p)
    return p * r - (p * (p - 1) // 2 - (p - k) * (p - k - 1) // 2)


def saturated(dims, bias: bool = False) -> bool:
    """Some hidden layer is wider than its two neighbours together (+1 with biases)."""
    return any(dims[i] > dims[i - 1] + int(bias) + dims[i + 1] for i in range(1, len(dims) - 1))


def linear_formula(dims) -> int:
    """Deep linear net U_1⋯U_q (any order of dims: the formula is symmetric): Σ over hidden layers
    of `layer_laws` (the balancedness laws U_iᵀU_i − U_{i+1}U_{i+1}ᵀ, MATH.md §2.3). Not for the
    scalar case n_0 = n_q = 1 (D − 1 laws)."""
    if dims[0] == 1 and dims[-1] == 1:
        raise ValueError("scalar deep linear net: the per-layer formula does not apply")
    return sum(layer_laws(dims[i], dims[i - 1] + dims[i + 1]) for i in range(1, len(dims) - 1))


def affine_formula(dims) -> int:
    """Deep affine net h_i = W_i h_{i−1} + b_i (identity activation with biases on every layer).

    Derivation: with Ŵ_i = [W_i b_i] and ĥ = (h, 1), ∂L/∂Ŵ_i = δ_i ĥ_{i−1}ᵀ and
    δ_i = W_{i+1}ᵀδ_{i+1}, so d/dt Ŵ_iŴ_iᵀ = −(δ_i h_iᵀ + h_i δ_iᵀ) = d/dt W_{i+1}ᵀW_{i+1}: the
    n_i(n_i+1)/2 laws Ŵ_iŴ_iᵀ − W_{i+1}ᵀW_{i+1} per hidden layer, i.e. `linear_formula` with one
    more neighbour unit (p_i = n_{i−1} + 1 + n_{i+1}); the output bias adds none. Checked against
    the exact engine in ``tests/test_trust.py`` on [2,6,1] (saturated: 18, not 21) and
    [2,1,4,1,2] (11); also, once, on [3,4,4,2], [2,3,1], [2,5,3], [4,2,2,2,2], [2,6,6,2], [2,2,2,1],
    [2,5,2,2], [2,5,1,2] and [2,8,2] (saturated: 30 = 5·8 − 10, not 36).
    """
    return sum(layer_laws(dims[i], dims[i - 1] + 1 + dims[i + 1]) for i in range(1, len(dims) - 1))


def mlp_expected(activation: str, dims, bias: bool) -> int:
    """The closed-form count of an MLP; `ValueError` where none is known.

    A bias-free ReLU / leaky-ReLU net with ONE input is positively homogeneous in x, so its
    outputs on any sample span only those at x = ±1. For [1, h, 1] these are two sums
    Σ_j c_j^± v_j w_j (c_j^± ∈ {1, slope} by the sign of w_j), whose gradients are linear fields
    acting on each pair (w_j, v_j) as multiples of one swap: they commute, dim Lie(W) = 2 and
    there are D − 2 = 2h − 2 laws. Deeper or wider bias-free nets on one input: no closed form.
    """
    if activation in HOMOGENEOUS and not bias and dims[0] == 1:
        if len(dims) == 3 and dims[-1] == 1:
            return 2 * dims[1] - 2
        raise ValueError("a bias-free homogeneous net on one input has no closed form here")
    if activation in HOMOGENEOUS:
        return hidden_neurons(dims)
    if activation in SMOOTH:
        return 0
    if activation == "identity":
        return affine_formula(dims) if bias else linear_formula(dims)
    raise ValueError(f"unknown activation {activation!r}")


def mlp_D(dims, bias: bool) -> int:
    return sum(a * b + (b if bias else 0) for a, b in zip(dims[:-1], dims[1:]))


def conv_D(conv: str, c0: int, c1: int, k: int, size: int, out: int, bias: bool) -> int:
    nd = 1 if conv == "conv1d" else 2
    positions = (size - k + 1) ** nd
    return c1 * c0 * k**nd + c1 * positions * out + ((c1 + out) if bias else 0)


# ------------------------------------------------------------------------------------------------
# cases
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One model to count. ``kind``: eqx-mlp, nnx-mlp, eqx-conv1d, eqx-conv2d, linear, relu or
    adv-<family>. ``dims`` for nets; ``conv`` = (c0, c1, kernel, size, out) for conv nets;
    ``eps`` for adversarial families; ``head``: an MLP's classifier head (`HEADS`), or ''."""

    kind: str
    expected: int
    D: int
    dims: tuple[int, ...] = ()
    activation: str = ""
    bias: bool = False
    conv: tuple[int, ...] = ()
    eps: float = 1.0
    seed: int = 0
    head: str = ""

    @property
    def adversarial(self) -> bool:
        """An adversarial member (ε ≠ the family's reference): ``ambiguous`` is an acceptable
        answer. The well-separated reference member (ε = 1) is an ordinary model."""
        return self.kind.startswith("adv-") and self.eps != ADVERSARIAL[self.kind[4:]][1]

    @property
    def layers(self) -> int:
        """Neuron layers, input and output included (len(dims)); 0 when not a net."""
        return len(self.dims)

    @property
    def group(self) -> str:
        """Per-kind group of the benchmark table."""
        if self.head:
            return "mlp + softmax / log-softmax head"
        if self.kind in ("eqx-mlp", "nnx-mlp"):
            act = "piecewise-linear" if self.activation in HOMOGENEOUS else (
                "smooth" if self.activation in SMOOTH else "identity")
            return f"{self.kind} {act}"
        if self.kind.startswith("adv-"):
            return "adversarial" if self.adversarial else "adversarial ε=1 (reference)"
        return self.kind

    @property
    def id(self) -> str:
        b = "bias" if self.bias else "nobias"
        d = "[" + ",".join(map(str, self.dims)) + "]"
        if self.kind in ("eqx-mlp", "nnx-mlp"):
            return f"{self.kind[:3]}-{self.activation}-{b}-{d}" + (f"-{self.head}" if self.head
                                                                  else "")
        if self.kind in ("eqx-conv1d", "eqx-conv2d"):
            c0, c1, k, size, out = self.conv
            return f"{self.kind}-relu-{b}-ch[{c0},{c1}]-k{k}-n{size}-out{out}"
        if self.kind == "linear":
            return f"linear-{d}"
        if self.kind == "relu":
            return f"relu-{b}-{d}"
        return f"{self.kind}-eps{'1' if self.eps == 1 else f'{self.eps:.0e}'}"


def mlp_case(lib: str, activation: str, dims, bias: bool, seed: int = 0, head: str = "") -> Case:
    dims = tuple(int(x) for x in dims)
    if lib == "eqx" and len(set(dims[1:-1])) != 1:
        raise ValueError("eqx.nn.MLP has one width")
    if head and activation == "identity":
        raise ValueError("no closed form for an identity net with a head")
    return Case(f"{lib}-mlp", mlp_expected(activation, dims, bias) + head_laws(head, dims, bias),
                mlp_D(dims, bias), dims=dims, activation=activation, bias=bias, seed=seed,
                head=head)


def head_laws(head: str, dims, bias: bool) -> int:
    """The laws a softmax or log-softmax head adds to an MLP's: h_L + 1 with an output bias, h_L
    without (h_L the last hidden width). Adding c(x) = vᵀh_L(x) + c₀ to every logit changes no
    output, so Σ_k W_out[k, j] (j ≤ h_L) and Σ_k b_k are conserved; and the head's output
    gradients span those of the logit differences z_k − z_0 (its Jacobian has range 1^⊥), so
    it removes nothing else: checked against the differences in the tests. `ValueError` for a
    single output or no hidden layer (`mlp_case` refuses identity nets with a head: their count
    has no closed form here)."""
    if not head:
        return 0
    if head not in HEADS or dims[-1] < 2 or len(dims) < 3:
        raise ValueError("a head needs a known squashing, two outputs and a hidden layer")
    return dims[-2] + int(bias)


def conv_case(conv: str, c0: int, c1: int, k: int, size: int, out: int, bias: bool,
              seed: int = 0) -> Case:
    if c0 * k < 2:
        # one-dimensional windows through the origin: every hyperplane of a channel is {x_t = 0}
        # (the "one input" caveat), so the per-channel count is not the network's.
        raise ValueError("conv windows need c0·k ≥ 2")
    return Case(f"eqx-{conv}", c1, conv_D(conv, c0, c1, k, size, out, bias),
                conv=(c0, c1, k, size, out), bias=bias, seed=seed)


def linear_case(dims, seed: int = 0) -> Case:
    dims = tuple(int(x) for x in dims)
    D = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    return Case("linear", linear_formula(dims), D, dims=dims, seed=seed)


def relu_case(dims, bias: bool, seed: int = 0) -> Case:
    dims = tuple(int(x) for x in dims)
    return Case("relu", hidden_neurons(dims), mlp_D(dims[:-1], bias) + dims[-2] * dims[-1],
                dims=dims, bias=bias, seed=seed)


def draw_mlp(rng: np.random.Generator, i: int, *, max_D: int, max_D_identity: int,
             max_width: int = 8, max_depth: int = 4, max_in: int = 4, max_out: int = 3,
             min_D: int = 0, min_in: int = 2, min_out: int = 1, head: str = "") -> Case:
    """The i-th MLP of a draw: activation ACTIVATIONS[i % 6], biases on every other block of six,
    library alternating so that every activation meets both libraries and both bias settings;
    inputs min_in..max_in, outputs min_out..max_out, ``head`` (`HEADS`) on the logits, widths 2..max_width (one width for eqx.nn.MLP),
    depth 1..max_depth hidden layers; redrawn until min_D ≤ D ≤ the cap. Identity nets of depth ≥ 2 with a
    saturated hidden layer are redrawn (the per-layer formula there is an observed pattern)."""
    activation = ACTIVATIONS[i % len(ACTIVATIONS)]
    bias = bool((i // len(ACTIVATIONS)) % 2)
    lib = ("eqx", "nnx")[(i + i // len(ACTIVATIONS)) % 2]
    cap = max_D_identity if activation == "identity" else max_D
    for _ in range(10_000):
        depth = int(rng.integers(1, max_depth + 1))
        n_in = int(rng.integers(min_in, max_in + 1))
        n_out = int(rng.integers(min_out, max_out + 1))
        if lib == "eqx":
            hidden = [int(rng.integers(2, max_width + 1))] * depth
        else:
            hidden = [int(x) for x in rng.integers(2, max_width + 1, depth)]
        dims = (n_in, *hidden, n_out)
        if not min_D <= mlp_D(dims, bias) <= cap:
            continue
        if activation == "identity" and depth >= 2 and saturated(dims, bias):
            continue
        try:
            return mlp_case(lib, activation, dims, bias, seed=int(rng.integers(0, 2**31 - 1)),
                            head=head)
        except ValueError:  # no closed form for this shape (`mlp_expected`)
            continue
    raise RuntimeError("no MLP under the cap")


def draw_conv(rng: np.random.Generator, i: int, *, max_D: int, max_c: int = 3,
              max_size: int = 6) -> Case:
    conv = ("conv1d", "conv2d")[i % 2]
    bias = bool(((i + 1) // 2) % 2)  # i = 0..3: 1-D plain, 2-D bias, 1-D bias, 2-D plain
    for _ in range(10_000):
        c0, c1 = int(rng.integers(1, max_c + 1)), int(rng.integers(2, max_c + 1))
        k = int(rng.integers(2, 4))
        size = int(rng.integers(k + 1, max_size + 1))
        out = int(rng.integers(1, 3))
        if conv_D(conv, c0, c1, k, size, out, bias) <= max_D:
            return conv_case(conv, c0, c1, k, size, out, bias, seed=int(rng.integers(0, 2**31 - 1)))
    raise RuntimeError("no conv net under the cap")


# ------------------------------------------------------------------------------------------------
# adversarial generator families (cf.custom); truth = the hand-derived count, equal to the count of
# the same family with well-separated generators (eps = 1)
# ------------------------------------------------------------------------------------------------

# name: (hand-derived count, reference eps, eps values used by the benchmark)
ADVERSARIAL: dict[str, tuple[int, float, tuple[float, ...]]] = {
    # φ = (x0·x1, x0·x1 + ε·x2) on R³. ∇φ2 − ∇φ1 = ε e2, so W = span{X = (x1, x0, 0), e2} for
    # every ε ≠ 0; [X, e2] = D(e2)·X − DX·e2 = 0 (X does not depend on x2). dim Lie = 2: ONE law
    # (x0² − x1²). At ε = 0 there would be 2.
    "parallel": (1, 1.0, (1e-4, 1e-6, 1e-8, 1e-10, 1e-12, 1e-14)),
    # φ = (x0x1x2, x0x1x2 + ε·x3x4) on R⁵: W = span{∇(x0x1x2), ∇(x3x4)} for ε ≠ 0, two fields on
    # disjoint coordinates that commute. dim Lie = 2: THREE laws (x0² − x1², x0² − x2², x3² − x4²).
    "parallel-prod": (3, 1.0, (1e-4, 1e-8, 1e-12, 1e-14)),
    # φ = (vec(AB), vec(AB) + ε·vec(CE)), A 2×3, B 3×2, C 2×2, E 2×2 (D = 20): for ε ≠ 0,
    # W = span{∇(AB)_k} ⊕ span{∇(CE)_k} on disjoint coordinates, brackets across vanish, so the
    # Lie algebra is the direct sum: laws(linear[2,3,2]) + laws(linear[2,2,2]) = 6 + 3 = 9.
    "parallel-linear": (9, 1.0, (1e-4, 1e-6, 1e-8, 1e-10, 1e-12, 1e-14)),
    # φ = (x0·x1, s·x2·x3) on R⁴: scaling a generator does not change its span; the two fields act
    # on disjoint coordinates and commute: dim Lie = 2, TWO laws (x0² − x1², x2² − x3²).
    "scale": (2, 1.0, (1e-12, 1e-8, 1e8, 1e12)),
    # φ_k = c_k·(U1U2U3)_k, deep linear [2,3,3,2] with output weights c_k = s^(−1..1) (log-spaced):
    # span{c_k∇φ_k} = span{∇φ_k}, the same Lie algebra as linear[2,3,3,2]: 6 + 6 = 12 laws.
    "scale-linear": (12, 1.0, (1e4, 1e8)),
    # φ = (x0, x0·x1 + ε·x0²·x2/2) on R³. X = ∇φ1 = e0, Y = ∇φ2 = (x1 + εx0x2, x0, εx0²/2),
    # [X, Y] = ∂_0 Y = (εx2, 1, εx0): the level-1 bracket is ε-close to span{X, Y} (it is e1 up
    # to O(ε), and Y ≡ x0·e1 mod e0 up to O(ε)). det[X; Y; [X,Y]] = x0·εx0 − εx0²/2 = εx0²/2 ≠ 0,
    # so Lie(W)(x) = R³: ZERO laws for every ε ≠ 0 (at ε = 0: one law, x2).
    "bracket": (0, 1.0, (1e-4, 1e-6, 1e-8, 1e-10, 1e-12, 1e-14)),
    # the same on R⁵ with an independent block: φ = (x0, x0x1 + ε·x0²x2/2, x3·x4): direct sum of
    # "bracket" (0 laws) and the product x3x4 on its own coordinates (1 law): ONE law.
    "bracket-block": (1, 1.0, (1e-6, 1e-10, 1e-14)),
}


def adversarial_case(family: str, eps: float) -> Case:
    expected = ADVERSARIAL[family][0]
    D = {"parallel": 3, "parallel-prod": 5, "parallel-linear": 20, "scale": 4,
         "scale-linear": 21, "bracket": 3, "bracket-block": 5}[family]
    return Case(f"adv-{family}", expected, D, eps=float(eps))


def adversarial_model(family: str, eps: float):
    import jax.numpy as jnp

    import conflow as cf

    if family == "parallel":
        return cf.custom(lambda x: jnp.stack([x[0] * x[1], x[0] * x[1] + eps * x[2]]),
                         np.zeros(3), name="adv-parallel")
    if family == "parallel-prod":
        f = lambda x: x[0] * x[1] * x[2]  # noqa: E731
        return cf.custom(lambda x: jnp.stack([f(x), f(x) + eps * x[3] * x[4]]), np.zeros(5),
                         name="adv-parallel-prod")
    if family == "parallel-linear":
        params = {"A": np.zeros((2, 3)), "B": np.zeros((3, 2)), "C": np.zeros((2, 2)),
                  "E": np.zeros((2, 2))}

        def phi(p):
            ab = p["A"] @ p["B"]
            return jnp.concatenate([ab.ravel(), (ab + eps * (p["C"] @ p["E"])).ravel()])

        return cf.custom(phi, params, name="adv-parallel-linear")
    if family == "scale":
        return cf.custom(lambda x: jnp.stack([x[0] * x[1], eps * x[2] * x[3]]), np.zeros(4),
                         name="adv-scale")
    if family == "scale-linear":
        params = {"U1": np.zeros((2, 3)), "U2": np.zeros((3, 3)), "U3": np.zeros((3, 2))}
        c = jnp.asarray(float(eps) ** np.linspace(-1.0, 1.0, 4))  # 1/s … s
        return cf.custom(lambda p: c * (p["U1"] @ p["U2"] @ p["U3"]).ravel(), params,
                         name="adv-scale-linear")
    if family == "bracket":
        return cf.custom(lambda x: jnp.stack([x[0], x[0] * x[1] + eps * x[0] ** 2 * x[2] / 2]),
                         np.zeros(3), name="adv-bracket")
    if family == "bracket-block":
        return cf.custom(lambda x: jnp.stack([x[0], x[0] * x[1] + eps * x[0] ** 2 * x[2] / 2,
                                              x[3] * x[4]]), np.zeros(5), name="adv-bracket-block")
    raise ValueError(f"unknown adversarial family {family!r}")


# ------------------------------------------------------------------------------------------------
# building and counting
# ------------------------------------------------------------------------------------------------


def activation_fn(name: str):
    import jax
    import jax.numpy as jnp

    return {"relu": jax.nn.relu, "leaky_relu": jax.nn.leaky_relu, "gelu": jax.nn.gelu,
            "tanh": jnp.tanh, "softplus": jax.nn.softplus, "identity": _identity}[name]


def _identity(x):
    return x


@functools.cache
def _nnx_mlp_class():
    from flax import nnx

    seq = getattr(nnx, "List", list)  # flax ≥ 0.12 wants nnx.List for a list of submodules

    class NNXMLP(nnx.Module):
        """What a user writes: Linear layers and an activation between them."""

        def __init__(self, dims, activation, bias: bool, rngs):
            self.layers = seq([nnx.Linear(a, b, use_bias=bias, rngs=rngs)
                               for a, b in zip(dims[:-1], dims[1:])])
            self.activation = activation

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = self.activation(layer(x))
            return self.layers[-1](x)

    return NNXMLP


@functools.cache
def _eqx_conv_class():
    import equinox as eqx
    import jax

    class ConvNet(eqx.Module):
        """Conv (1-D or 2-D) + ReLU + flatten + Linear."""

        conv: Any
        linear: Any

        def __init__(self, nd, c0, c1, k, size, out, bias, key):
            k1, k2 = jax.random.split(key)
            Conv = eqx.nn.Conv1d if nd == 1 else eqx.nn.Conv2d
            self.conv = Conv(c0, c1, k, use_bias=bias, key=k1)
            self.linear = eqx.nn.Linear(c1 * (size - k + 1) ** nd, out, use_bias=bias, key=k2)

        def __call__(self, x):
            return self.linear(jax.nn.relu(self.conv(x)).ravel())

    return ConvNet


def build(case: Case):
    """(what to count, input_shape or None): a module for from_model kinds ((apply_fn, module)
    with a head), a Model otherwise."""
    import jax

    import conflow as cf

    key = jax.random.PRNGKey(case.seed)
    if case.head:
        net, shape = build(dataclasses.replace(case, head=""))
        return (_head_apply(case.head), net), shape
    if case.kind == "eqx-mlp":
        import equinox as eqx

        d = case.dims
        net = eqx.nn.MLP(d[0], d[-1], d[1], len(d) - 2, activation=activation_fn(case.activation),
                         use_bias=case.bias, use_final_bias=case.bias, key=key)
        return net, (d[0],)
    if case.kind == "nnx-mlp":
        from flax import nnx

        net = _nnx_mlp_class()(case.dims, activation_fn(case.activation), case.bias,
                               nnx.Rngs(case.seed))
        return net, (case.dims[0],)
    if case.kind in ("eqx-conv1d", "eqx-conv2d"):
        nd = 1 if case.kind == "eqx-conv1d" else 2
        c0, c1, k, size, out = case.conv
        net = _eqx_conv_class()(nd, c0, c1, k, size, out, case.bias, key)
        return net, (c0,) + (size,) * nd
    if case.kind == "linear":
        return cf.linear(list(case.dims)), None
    if case.kind == "relu":
        return cf.relu(list(case.dims), bias=case.bias), None
    if case.kind.startswith("adv-"):
        return adversarial_model(case.kind[4:], case.eps), None
    raise ValueError(f"unknown kind {case.kind!r}")


def _head_apply(head: str):
    """``(module, x) ↦ head(module(x))``, the form `from_model` takes with a module."""
    import jax

    squash = getattr(jax.nn, head)
    return lambda module, x: squash(module(x))


def count(case: Case, *, points: int = 3):
    """Count ``case`` as a user would: ``count_laws_from_model(net, input_shape=...)`` for code
    models (defaults: input sample and the doubled-sample recount), ``count_laws(model)`` for
    built-ins and custom φ. Returns the result (``.status``, ``.n_laws``, ``.D`` via the model)."""
    import conflow as cf

    obj, shape = build(case)
    if shape is not None:  # a module, or (apply_fn, module) for a net with a head
        args = obj if isinstance(obj, tuple) else (obj,)
        return cf.count_laws_from_model(*args, input_shape=shape, points=points, seed=case.seed)
    return cf.count_laws(obj, points=points, seed=case.seed)


def verdict(case: Case, status: str | None, n_laws: int | None) -> str:
    """``ok-right``, ``ok-WRONG``, or the status (``ambiguous``, ``not_converged``, ``error``)."""
    if status == "ok":
        return "ok-right" if n_laws == case.expected else "ok-WRONG"
    return status or "error"


def run_case(case: Case, *, points: int = 3) -> dict:
    """`count` with the exception caught and the wall time: one benchmark row."""
    t0 = time.perf_counter()
    row = {"id": case.id, "kind": case.kind, "group": case.group, "D": case.D,
           "layers": case.layers, "expected": case.expected, "adversarial": case.adversarial,
           "status": None, "n_laws": None, "error": None, "reason": "", "depth": None,
           "settled_by": ""}
    try:
        r = count(case, points=points)
        best = getattr(r, "best", r)  # a count on inputs: its recount where there is one
        row.update(status=r.status, n_laws=r.n_laws, reason=best.reason,
                   depth=None if best.trace is None else best.trace.depth,
                   settled_by=best.settled_by)
        D = r.model.D if hasattr(r, "model") and hasattr(r.model, "D") else r.D
        if D != case.D:
            row["error"] = f"D is {D}, the case says {case.D}"
            row["status"] = "error"
    except Exception as e:  # noqa: BLE001 - recorded, the benchmark goes on
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        row["status"] = "error"
    row["seconds"] = time.perf_counter() - t0
    row["verdict"] = verdict(case, row["status"], row["n_laws"])
    return row


__all__ = [
    "ACTIVATIONS", "ADVERSARIAL", "Case", "adversarial_case", "adversarial_model",
    "affine_formula", "build", "conv_case", "count", "draw_conv", "draw_mlp", "hidden_neurons",
    "layer_laws", "linear_case", "linear_formula", "mlp_case", "relu_case", "run_case",
    "saturated", "verdict",
]
