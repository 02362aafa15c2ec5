"""Blind reruns of the papers' experiments (MATH.md §6).

Each protocol draws its architectures from a fixed seed, counts every one with `count_laws`
(never told the expected number), and compares afterwards with the number of independent
closed-form laws of the literature (the rank of their gradients at a generic point, as in the
reference notebooks). A row matches when the count is ``ok`` and equal to that number.

Papers:

- ``gradient`` (MATH.md §6.1): products, 50 deep linear and 50 deep ReLU nets, Euclidean GF;
- ``momentum`` (MATH.md §6.2): 20 random linear nets, 20 ReLU nets, 20 NMF and 20 ICNN
  configurations per protocol, each under momentum with τ = 0, a random τ ∈ (0.1, 2) and
  Nesterov (linear, ReLU: Euclidean; NMF, ICNN: mirror momentum), and NMF / ICNN also under the
  entropy-metric gradient flow. Closed-form counts: MATH.md §3.4 and §4, built in
  `conflow.reference.closed_forms` (comparison only);
- ``transformers`` (P3, MATH.md §2.5–§2.9): conv-ReLU blocks, residual blocks (with P3 Example
  4.8), single- and multi-head attention, softmax layers, ResNets and transformer blocks, each a
  few configurations from a fixed seed; the φ-based families both lifted and as the network on
  generic inputs. Comparison: the rank of `gradient_laws`' closed forms, with a note where it
  differs from P3's stated count (`conflow.reference.transformer_laws`);
- ``all``: every protocol of every paper.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable, Iterator
from typing import Any

from conflow.errors import InputError
from conflow.flows import AbstractFlow, GradientFlow, MomentumFlow, SignFlow
from conflow.flows import decay as weight_decay
from conflow.laws.count import METHODS, LawCount, count_laws
from conflow.models import (
    attention,
    attention_apply,
    attention_params,
    conv,
    conv_apply,
    conv_params,
    factorization,
    icnn,
    linear,
    mlp,
    nmf,
    product,
    relu,
    residual,
    resnet,
    softmax_layer,
    transformer,
)
from conflow.models.base import Model
from conflow.models.from_model import from_model
from conflow.reference import closed_forms, transformer_laws


def flow_label(count: LawCount) -> str:
    """``gradient``, ``gradient(entropy)``, ``momentum τ=0.73``, ``nesterov(entropy)``, …"""
    label = count.flow + ("" if count.metric == "euclidean" else f"({count.metric})")
    if count.flow == "momentum" and count.tau is not None:
        label += f" τ={count.tau:g}"
    return label


@dataclasses.dataclass(frozen=True)
class Row:
    """One (architecture, flow) case of a protocol: the blind count and the closed-form comparison.

    ``note`` explains a comparison value that is not the plain closed-form list of MATH.md (e.g.
    "closed forms incomplete"); empty otherwise. The flow's name and τ are in ``count``.
    """

    protocol: str
    count: LawCount
    known: int | None
    note: str = ""
    flow_text: str = ""  # the flow's label when `flow_label(count)` cannot tell it (weight decay)

    @property
    def match(self) -> bool:
        return self.count.status == "ok" and self.count.n_laws == self.known

    @property
    def flow_label(self) -> str:
        return self.flow_text or flow_label(self.count)

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "known": self.known, "match": self.match,
                "flow_label": self.flow_label, "note": self.note, **self.count.to_json()}


#: A protocol entry: one configuration ``(model, flow)``, or ``(model, [flow, …])`` for a
#: configuration counted under several flows (one `Row` each). ``flow=None`` is Euclidean GF.
#: ``model`` may be a zero-argument builder (e.g. a `functools.partial`) instead of a `Model`:
#: networks given as code compile checks when built (1–2 s each), so they are built only when
#: their rows are counted, once for all their flows.
Case = tuple[Any, Any]
#: ``(model, flow) -> (known count or None, note)``.
KnownFn = Callable[[Model, Any], tuple[int | None, str]]


def _closed_form_count(model: Model, flow: AbstractFlow) -> tuple[int | None, str]:
    return closed_forms.known_count(model, flow), ""


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A named list of configurations built from a fixed seed.

    ``cases()`` returns `Case` entries; ``known(model, flow)`` the comparison count (default: the
    rank of the family's closed-form gradient-flow laws, `closed_forms.known_count`).
    """

    name: str
    description: str
    cases: Callable[[], list[Case]]
    known: KnownFn | None = None

    def configurations(self, limit: int | None = None) -> list[tuple[Any, list[Any]]]:
        """The first ``limit`` configurations as (model or builder, [flow, …]); nothing built."""
        return [(model, list(flows) if isinstance(flows, (list, tuple)) else [flows])
                for model, flows in self.cases()[:limit]]

    def rows(self, limit: int | None = None) -> list[tuple[Model, Any]]:
        """The (model, flow) pairs of the first ``limit`` configurations, flows expanded (each
        model built once)."""
        out = []
        for entry, flows in self.configurations(limit):
            model = built(entry)
            out += [(model, flow) for flow in flows]
        return out


def built(entry: Any) -> Model:
    """A case's model: ``entry`` itself, or what its builder returns."""
    return entry if isinstance(entry, Model) else entry()


def _linear_nets(seed: int = 0, n: int = 50) -> list[tuple[Model, Any]]:
    """MATH.md §6.1 C: deep linear nets, depth (number of matrices) 2–4, widths 2–5."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        depth = rng.randint(2, 4)
        out.append((linear([rng.randint(2, 5) for _ in range(depth + 1)]), None))
    return out


def _relu_nets(seed: int = 1, n: int = 50) -> list[tuple[Model, Any]]:
    """MATH.md §6.1 D: deep ReLU nets, depth 2–4, widths 2–9, biases with probability ½."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        depth = rng.randint(2, 4)
        dims = [rng.randint(2, 9) for _ in range(depth + 1)]
        out.append((relu(dims, bias=rng.random() < 0.5), None))
    return out


def _products() -> list[tuple[Model, Any]]:
    """MATH.md §6.1 B and §8 rows 1–2: φ = x1⋯xD."""
    return [(product(D), None) for D in (2, 3, 4, 5, 8)]


# --------------------------------------------------------------------------- momentum (§6.2)
#
# MATH.md §6.2: the reference notebook ran each momentum protocol with τ = 0 only; here every
# configuration is counted under τ = 0, a random τ ∈ (0.1, 2) (drawn per configuration from the
# protocol's seed) and Nesterov τ(t) = 3/t.


def _momentum_flows(rng: random.Random, metric: str = "euclidean") -> list[MomentumFlow]:
    tau = round(rng.uniform(0.1, 2.0), 2)
    return [MomentumFlow(0.0, metric), MomentumFlow(tau, metric), MomentumFlow("nesterov", metric)]


def _linear_momentum(seed: int = 20, n: int = 20) -> list[Case]:
    """MATH.md §6.2 "linear MF": depth (number of matrices) ∈ {2,3}, widths 1–3."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        depth = rng.randint(2, 3)
        dims = [rng.randint(1, 3) for _ in range(depth + 1)]
        out.append((linear(dims), _momentum_flows(rng)))
    return out


def _relu_momentum(seed: int = 21, n: int = 20) -> list[Case]:
    """MATH.md §6.2 "ReLU MF": depth (number of layers) ∈ {2,3}, widths 1–3, bias w.p. ½."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        depth = rng.randint(2, 3)
        dims = [rng.randint(1, 3) for _ in range(depth + 1)]
        model = relu(dims, bias=rng.random() < 0.5)
        out.append((model, _momentum_flows(rng)))
    return out


def _nmf_gradient(seed: int = 22, n: int = 20) -> list[Case]:
    """MATH.md §6.2 "NMF GF": (n1, r, n3) ∈ {1..7}³, entropy mirror gradient flow."""
    rng = random.Random(seed)
    return [(nmf(*(rng.randint(1, 7) for _ in range(3))), GradientFlow("entropy"))
            for _ in range(n)]


def _nmf_momentum(seed: int = 23, n: int = 20) -> list[Case]:
    """MATH.md §6.2 "NMF MF": dims 1–5, mirror (entropy) momentum."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        model = nmf(*(rng.randint(1, 5) for _ in range(3)))
        out.append((model, _momentum_flows(rng, "entropy")))
    return out


def _icnn_gradient(seed: int = 24, n: int = 20) -> list[Case]:
    """MATH.md §6.2 "ICNN GF": (n1, n2, n3) ∈ {1..5}³, bias w.p. ½, entropy metric on U."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        dims = [rng.randint(1, 5) for _ in range(3)]
        out.append((icnn(*dims, bias=rng.random() < 0.5), GradientFlow("entropy")))
    return out


def _icnn_momentum(seed: int = 25, n: int = 20) -> list[Case]:
    """MATH.md §6.2 "ICNN MF": (n1, n2, n3) ∈ {1..5}³, bias w.p. ½, mirror momentum on U."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        dims = [rng.randint(1, 5) for _ in range(3)]
        model = icnn(*dims, bias=rng.random() < 0.5)
        out.append((model, _momentum_flows(rng, "entropy")))
    return out


def _scalar_factor_layers(model: Model) -> list[int]:
    """Hidden layers i of a deep (≥ 3 matrices) linear net with n_{i−1} = n_{i+1} = 1."""
    dims = model.dims
    if model.name != "linear" or len(dims) < 4:
        return []
    return [i for i in range(1, len(dims) - 1) if dims[i - 1] == dims[i + 1] == 1]


def _momentum_known(model: Model, flow: AbstractFlow) -> tuple[int | None, str]:
    """Closed-form count of MATH.md §3.4 (momentum) and §4.2, §4.4 (entropy GF).

    - linear nets under momentum: rank of `closed_forms.linear_momentum_laws` (Noether rotations
      per hidden layer, plus the scalar-factor laws). For deep nets with a hidden layer between two
      width-1 layers MATH.md §3.4 lists fewer laws; the row's note says so (closed forms
      incomplete there: the extra laws are derived and verified in `closed_forms`);
    - ReLU, NMF, ICNN under momentum: 0 (§3.4);
    - NMF under the entropy GF: r, or 2r − 1 when n1 = n3 = 1 (§4.2; the scalar case adds the
      r − 1 laws of `closed_forms.nmf_scalar_gradient_laws`); ICNN: n2 (§4.4).
    """
    known = closed_forms.known_count(model, flow)
    layers = _scalar_factor_layers(model) if flow.has_velocity else []
    if not layers:
        return known, ""
    math_count = closed_forms.known_count(model, flow, deep_scalar_factors=False)
    if math_count == known:
        return known, ""
    which = ", ".join(map(str, layers))
    return known, (f"closed forms incomplete: MATH §3.4 lists {math_count}; +{known - math_count} "
                   f"scalar-factor laws of hidden layer {which} (closed_forms.py, proven)")


# --------------------------------------------------------------------------- transformers (P3)
#
# MATH.md §2.5–§2.11. The φ-based families (conv path-lifting, attention (QᵀK, VᵀO)) are counted
# both as such and as the network itself on generic inputs (`from_model` on `conv_apply` /
# `attention_apply`): the second count is the genuine check of P3's theorems (W_θ = range ∂φᵀ
# on Θ_conv / Θ_att), the first only of the linear algebra. Residual nets, transformer blocks
# and the softmax layer have no finite φ: they are counted on generic inputs only.


def _conv_net(c0: int, c1: int, c2: int, n_v: int, n_u: int, bias: bool, seed: int) -> Model:
    """The conv-ReLU-conv block itself on generic signals of c0 channels, length n_v + n_u + 2
    (4 output positions per channel)."""
    params = conv_params(c0, c1, c2, n_v, n_u, bias=bias)
    model = from_model(conv_apply, params, input_shape=(c0, n_v + n_u + 2), seed=seed,
                       name="conv")
    return dataclasses.replace(model.as_family("conv", (c0, c1, c2, n_v, n_u)), bias=bias)


def _attention_net(dim: int, d1: int, heads: int, tokens: int, seed: int) -> Model:
    """The attention layer itself on generic sequences of ``tokens`` tokens (P3 needs ≥ 2),
    inputs of radius 1 (the softmax saturates on large inputs)."""
    model = from_model(attention_apply, attention_params(dim, d1, heads), seed=seed,
                       input_shape=(tokens, dim), input_radius=1.0, name="attention")
    return model.as_family("attention", (dim, d1) if heads == 1 else (dim, d1, heads))


def _mlp_block(m: int, h: int, bias: bool, seed: int) -> Model:
    """The residual ReLU block x ↦ x + W2 σ(W1 x (+ b1)) on generic inputs."""
    return residual(mlp([m, h, m], "relu", bias=bias, seed=seed))


def _residual_attention(dim: int, d1: int, heads: int, tokens: int, seed: int) -> Model:
    return residual(_attention_net(dim, d1, heads, tokens, seed))


def _example_4_8() -> Model:
    """P3 Example 4.8: x + uσ(vx) + sσ(t(x + uσ(vx))), i.e. `resnet` [1,1,2] without biases,
    with its generic points drawn in Ω = {sgn t = sgn v = sgn u} (here u, v, s, t > 0: the
    model's blocks are marked positive). Off Ω the count is lower (2: the block laws)."""
    model = resnet(1, 1, 2)
    blocks = tuple(dataclasses.replace(b, positive=True) for b in model.blocks)
    return dataclasses.replace(model, blocks=blocks, name=transformer_laws.EXAMPLE_4_8)


def _conv_protocol(seed: int = 30, n: int = 6) -> list[Case]:
    """MATH.md §2.5: c0 ∈ 1..3, c1 ∈ 1..4, c2 ∈ 1..3, filters n_v ∈ 2..3, n_u ∈ 1..3, bias w.p.
    ½; each as the path-lifting `conv` and as the block on signals."""
    rng = random.Random(seed)
    out: list[Case] = []
    for _ in range(n):
        dims = (rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 3), rng.randint(2, 3),
                rng.randint(1, 3))
        bias = rng.random() < 0.5
        out += [(conv(*dims, bias=bias), None),
                (functools.partial(_conv_net, *dims, bias=bias, seed=seed), None)]
    return out


def _residual_protocol(seed: int = 31, n: int = 6) -> list[Case]:
    """MATH.md §2.6, §2.9: P3 Example 4.8 first, then residual blocks x + g(θ, x) with g a ReLU
    MLP [m, h, m] (m ∈ 2..3, h ∈ 1..4, bias w.p. ½) or an attention layer (dim ∈ 1..2,
    d1 ∈ 1..2, heads ∈ 1..2, 2–3 tokens), each with probability ½."""
    rng = random.Random(seed)
    out: list[Case] = [(_example_4_8, None)]
    for _ in range(n):
        if rng.random() < 0.5:
            block = functools.partial(_mlp_block, rng.randint(2, 3), rng.randint(1, 4),
                                      rng.random() < 0.5, seed)
        else:
            block = functools.partial(_residual_attention, rng.randint(1, 2), rng.randint(1, 2),
                                      rng.randint(1, 2), rng.randint(2, 3), seed)
        out.append((block, None))
    return out


def _attention_protocol(seed: int = 32, n: int = 8) -> list[Case]:
    """MATH.md §2.7: dim ∈ 1..3, d1 ∈ 1..3 (d1 > 2·dim occurs for dim = 1), heads ∈ 1..2,
    2–3 tokens; each as the (QᵀK, VᵀO) model and as the layer on sequences."""
    rng = random.Random(seed)
    out: list[Case] = []
    for _ in range(n):
        dim, d1, heads, tokens = (rng.randint(1, 3), rng.randint(1, 3), rng.randint(1, 2),
                                  rng.randint(2, 3))
        out += [(attention(dim, d1, heads), None),
                (functools.partial(_attention_net, dim, d1, heads, tokens, seed), None)]
    return out


def _softmax_protocol(seed: int = 33, n: int = 8) -> list[Case]:
    """MATH.md §2.8: softmax layers with n ∈ 2..5 classes and m ∈ 1..5 inputs (KL loss)."""
    rng = random.Random(seed)
    return [(functools.partial(softmax_layer, rng.randint(2, 5), rng.randint(1, 5)), None)
            for _ in range(n)]


def _resnet_protocol(seed: int = 34, n: int = 6) -> list[Case]:
    """MATH.md §2.9: ResNets of 2–3 residual ReLU blocks, width ∈ 2..3 (P3: no law beyond the
    block laws for width > 1), hidden ∈ 1..3, bias w.p. ½."""
    rng = random.Random(seed)
    return [(functools.partial(resnet, rng.randint(2, 3), rng.randint(1, 3), rng.randint(2, 3),
                               bias=rng.random() < 0.5), None) for _ in range(n)]


def _transformer_protocol(seed: int = 35, n: int = 5) -> list[Case]:
    """MATH.md §2.9: transformer blocks (attention + token-wise ReLU MLP, both residual) on 3
    tokens, width ∈ 2..3, d1 ∈ 1..2, hidden ∈ 1..3, heads ∈ 1..2."""
    rng = random.Random(seed)
    return [(functools.partial(transformer, rng.randint(2, 3), rng.randint(1, 2),
                               rng.randint(1, 3), rng.randint(1, 2)), None) for _ in range(n)]


@dataclasses.dataclass(frozen=True)
class DecaySchedule:
    """λ(t) = c / (1 + t), a weight decay given as a function of time (Λ(t) = c log(1 + t))."""

    c: float

    def __call__(self, t):
        return self.c / (1.0 + t)


def _weight_decay_flows(rng: random.Random) -> list[GradientFlow]:
    """Gradient flow without weight decay, with a constant λ ∈ (0.05, 1) and with
    λ(t) = c/(1 + t), c ∈ (0.05, 1), drawn per configuration."""
    lam, c = round(rng.uniform(0.05, 1.0), 2), round(rng.uniform(0.05, 1.0), 2)
    return [GradientFlow(), GradientFlow(weight_decay=lam),
            GradientFlow(weight_decay=DecaySchedule(c))]


def _weight_decay_protocol(seed: int = 36, n: int = 6) -> list[Case]:
    """MATH.md §2.10: P3 Example 4.8 on Ω first, then ``n`` models drawn among deep linear nets
    (depth 2–3, widths 1–3), ReLU nets (depth 2–3, widths 2–3, bias w.p. ½), attention
    (dim 1–2, d1 1–2), conv blocks (lifted, c0, c1, c2 1–2, filters 2), softmax layers (n 2–3,
    m 1–3) and ResNets (width 2, hidden 1–2, 2 blocks); each under `_weight_decay_flows`."""
    rng = random.Random(seed)
    out: list[Case] = [(_example_4_8, _weight_decay_flows(rng))]
    for _ in range(n):
        kind = rng.choice(["linear", "relu", "attention", "conv", "softmax", "resnet"])
        if kind == "linear":
            model: Any = linear([rng.randint(1, 3) for _ in range(rng.randint(2, 3) + 1)])
        elif kind == "relu":
            model = relu([rng.randint(2, 3) for _ in range(rng.randint(2, 3) + 1)],
                         bias=rng.random() < 0.5)
        elif kind == "attention":
            model = attention(rng.randint(1, 2), rng.randint(1, 2))
        elif kind == "conv":
            model = conv(rng.randint(1, 2), rng.randint(1, 2), rng.randint(1, 2), 2)
        elif kind == "softmax":
            model = functools.partial(softmax_layer, rng.randint(2, 3), rng.randint(1, 3))
        else:
            model = functools.partial(resnet, 2, rng.randint(1, 2), 2)
        out.append((model, _weight_decay_flows(rng)))
    return out


def _weight_decay_known(model: Model, flow: AbstractFlow) -> tuple[int | None, str]:
    """The rank of the closed-form laws kept under weight decay (`closed_forms.decayed_laws`:
    the homogeneous laws at e^{Λ(t)}θ), with a note where it differs from the count without
    weight decay (P3 Thm 2.1 as the issue states it: the two counts are equal)."""
    known = closed_forms.known_count(model, flow)
    if not _decayed(flow):
        return known, ""
    free = closed_forms.known_count(model)
    if known is None or free == known:
        return known, ""
    return known, (f"count without weight decay is {free}: a non-homogeneous law H is not kept "
                   f"as H(e^Λθ) (closed_forms.decayed_laws)")


def _sign_protocol(seed: int = 37, n: int = 8, n_attention: int = 4) -> list[Case]:
    """MATH.md §2.11: UVᵀ (``factorization`` (n, r, m)) with (1,1,1) first, then ``n`` distinct
    others with n, r, m ∈ 1..3; then ``n_attention`` distinct attention layers, dim 1–2, d1 1–2,
    heads 1–2; all under the sign flow."""
    rng = random.Random(seed)
    dims = [(1, 1, 1)]
    while len(dims) < n + 1:  # distinct configurations
        drawn = tuple(rng.randint(1, 3) for _ in range(3))
        dims += [drawn] if drawn not in dims else []
    out: list[Case] = [(factorization(*d), SignFlow()) for d in dims]
    heads: list[tuple[int, int, int]] = []
    while len(heads) < n_attention:  # distinct configurations (of the 8 possible)
        drawn = (rng.randint(1, 2), rng.randint(1, 2), rng.randint(1, 2))
        heads += [drawn] if drawn not in heads else []
    return out + [(attention(*h), SignFlow()) for h in heads]


def _sign_known(model: Model, flow: AbstractFlow) -> tuple[int | None, str]:
    """The rank of the derived sign-flow laws (`closed_forms.sign_flow_laws`), with a note where
    P3's statement (`transformer_laws.sign_flow_count`: none except n = m = r = 1) differs."""
    known = closed_forms.known_count(model, flow)
    stated = transformer_laws.sign_flow_count(model)
    if stated is None or known is None or stated == known:
        return known, ""
    return known, (f"P3 App. R states {stated}; derived: coordinates with parallel ∂φ/∂θ_j "
                   f"(n = 1 or m = 1) move together (closed_forms.sign_flow_laws)")


def _p3_known(model: Model, flow: AbstractFlow) -> tuple[int | None, str]:
    """The rank of the closed-form laws (`gradient_laws`, Example 4.8's third law derived
    there), with a note when it differs from P3's stated count (`transformer_laws.p3_count`)."""
    known = closed_forms.known_count(model, flow)
    stated = transformer_laws.p3_count(model)
    if stated is None or known is None or stated == known:
        return known, ""
    return known, f"P3's count is {stated}; the closed-form laws have rank {known}"


PROTOCOLS: dict[str, list[Protocol]] = {
    "gradient": [
        Protocol("product", "φ = x1⋯xD, D ∈ {2,3,4,5,8}", _products),
        Protocol("linear", "50 deep linear nets, depth 2–4, widths 2–5 (seed 0)", _linear_nets),
        Protocol("relu", "50 deep ReLU nets, depth 2–4, widths 2–9, bias w.p. ½ (seed 1)",
                 _relu_nets),
    ],
    "momentum": [
        Protocol("linear-mf", "20 linear nets, depth 2–3, widths 1–3; momentum τ = 0, random "
                 "τ, Nesterov (seed 20)", _linear_momentum, _momentum_known),
        Protocol("relu-mf", "20 ReLU nets, depth 2–3, widths 1–3, bias w.p. ½; momentum τ = 0, "
                 "random τ, Nesterov (seed 21)", _relu_momentum, _momentum_known),
        Protocol("nmf-gf", "20 NMF (n1, r, n3) ∈ {1..7}³, entropy gradient flow (seed 22)",
                 _nmf_gradient, _momentum_known),
        Protocol("nmf-mf", "20 NMF, dims 1–5; mirror momentum τ = 0, random τ, Nesterov (seed 23)",
                 _nmf_momentum, _momentum_known),
        Protocol("icnn-gf", "20 ICNN, dims 1–5, bias w.p. ½, entropy gradient flow on U (seed 24)",
                 _icnn_gradient, _momentum_known),
        Protocol("icnn-mf", "20 ICNN, dims 1–5, bias w.p. ½; mirror momentum τ = 0, random τ, "
                 "Nesterov (seed 25)", _icnn_momentum, _momentum_known),
    ],
    "transformers": [
        Protocol("conv", "6 conv-ReLU blocks, c0 1–3, c1 1–4, c2 1–3, filters 2–3 / 1–3, bias "
                 "w.p. ½; lifted and on signals (seed 30)", _conv_protocol, _p3_known),
        Protocol("residual", "P3 Example 4.8 on Ω, then 6 residual ReLU-MLP / attention blocks "
                 "(seed 31)", _residual_protocol, _p3_known),
        Protocol("attention", "8 attention layers, dim 1–3, d1 1–3, heads 1–2; lifted and on "
                 "2–3 tokens (seed 32)", _attention_protocol, _p3_known),
        Protocol("softmax", "8 softmax layers, n 2–5 classes, m 1–5 inputs, KL (seed 33)",
                 _softmax_protocol, _p3_known),
        Protocol("resnet", "6 ResNets, 2–3 ReLU blocks, width 2–3, hidden 1–3, bias w.p. ½ "
                 "(seed 34)", _resnet_protocol, _p3_known),
        Protocol("transformer", "5 transformer blocks, width 2–3, d1 1–2, hidden 1–3, heads 1–2, "
                 "3 tokens (seed 35)", _transformer_protocol, _p3_known),
        Protocol("weight-decay", "P3 Example 4.8, then 6 linear / ReLU / attention / conv / "
                 "softmax / ResNet models; GF, constant λ, λ(t) = c/(1+t) (seed 36)",
                 _weight_decay_protocol, _weight_decay_known),
        Protocol("sign", "UVᵀ (1,1,1), 8 distinct UVᵀ with n, r, m 1–3, 4 attention layers; sign flow "
                 "(seed 37)", _sign_protocol, _sign_known),
    ],
}
PAPERS = tuple(PROTOCOLS) + ("all",)


def protocols_for(paper: str) -> list[Protocol]:
    if paper == "all":
        return [p for ps in PROTOCOLS.values() for p in ps]
    if paper not in PROTOCOLS:
        raise InputError(f"unknown paper {paper!r}; known: {', '.join(PAPERS)}")
    return PROTOCOLS[paper]


def run(
    paper: str = "gradient",
    *,
    limit: int | None = None,
    points: int = 3,
    seed: int = 0,
    method: str = "auto",
    skip: Callable[[str, int, int, Any, Any], bool] | None = None,
) -> Iterator[Row]:
    """Yield one `Row` per (configuration, flow) of the paper's protocols, for the first
    ``limit`` configurations of each. ``method`` is passed to `count_laws` for every row
    (``"exact"`` forces the exact engine, e.g. for ``conflow reproduce --exact``).
    ``skip(protocol, case, flow_index, model, flow)`` (``case``: the configuration's index in
    its protocol; ``model``: a `Model` or a builder) is asked before each row, in order: a row
    it skips is neither counted nor yielded, and a configuration whose rows are all skipped is
    not built (``conflow reproduce --resume``).
    A bad ``paper`` or ``method`` raises `InputError` at the call."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    protocols = protocols_for(paper)
    return _run(protocols, limit, points, seed, method, skip)


def _run(protocols: list[Protocol], limit, points, seed, method, skip=None) -> Iterator[Row]:
    for protocol in protocols:
        known_fn = protocol.known or _closed_form_count
        for case, (entry, flows) in enumerate(protocol.configurations(limit)):
            if skip is not None:
                flows = [f for j, f in enumerate(flows)
                         if not skip(protocol.name, case, j, entry, f)]
                if not flows:
                    continue
            model = built(entry)  # here, not before: a builder compiles
            for flow in flows:
                count, fallback = _count(model, flow, method, points, seed)
                known, note = known_fn(model, flow)
                note = "; ".join(n for n in (fallback, note) if n)
                yield Row(protocol.name, count, known, note, _flow_text(flow))


def _count(model: Model, flow: Any, method: str, points: int, seed: int) -> tuple[LawCount, str]:
    """`count_laws`; with ``method="exact"`` (``--exact``), a case the exact engine cannot take
    (φ or the flow not polynomial: networks with softmax, the sign flow, a weight decay λ(t)) is
    counted by ``"auto"`` instead, and the returned note says so."""
    try:
        return count_laws(model, flow, method=method, points=points, seed=seed), ""
    except InputError as exc:
        if method != "exact":
            raise
        reason = str(exc).split(":")[0]
        return (count_laws(model, flow, method="auto", points=points, seed=seed),
                f"no exact count ({reason}): counted by auto")


def _decayed(flow: Any) -> bool:
    lam = getattr(flow, "weight_decay", None)  # None: a flow without the option
    return lam is not None and weight_decay.is_decayed(lam)


def _flow_text(flow: Any) -> str:
    """``gradient+wd(λ=0.3)``, ``gradient+wd(λ=0.5/(1+t))`` for a weight decay; '' otherwise."""
    lam = getattr(flow, "weight_decay", None)
    if lam is None or not weight_decay.is_decayed(lam):
        return ""
    if isinstance(lam, DecaySchedule):
        return f"{flow.name}+wd(λ={lam.c:g}/(1+t))"
    return flow.label


def n_cases(paper: str, limit: int | None = None) -> int:
    """Number of rows `run` yields (configurations × flows)."""
    return sum(len(flows) for p in protocols_for(paper) for _, flows in p.configurations(limit))


def format_row(row: Row) -> str:
    c = row.count
    found = "?" if c.n_laws is None else str(c.n_laws)
    gap = "-" if c.gap is None else "inf" if c.gap == float("inf") else f"{c.gap:.1e}"
    flag = "ok" if row.match else f"MISMATCH ({c.status})"
    if row.note:
        flag += f"; {row.note}"
    return (f"{row.protocol:<11} {c.model:<28} {row.flow_label:<24} {c.method:<7} {c.D:>5} "
            f"{found:>6} {row.known!s:>6} {gap:>9} {c.depth:>5} {c.seconds:>7.2f}  {flag}")


HEADER = (f"{'protocol':<11} {'architecture':<28} {'flow':<24} {'method':<7} {'D':>5} "
          f"{'laws':>6} {'known':>6} {'gap':>9} {'depth':>5} {'seconds':>7}")


def summarise(rows: list[Row], seconds: float) -> dict[str, Any]:
    by_protocol: dict[str, dict[str, Any]] = {}
    for r in rows:
        s = by_protocol.setdefault(r.protocol, {"cases": 0, "matches": 0, "seconds": 0.0,
                                                "notes": 0})
        s["cases"] += 1
        s["matches"] += int(r.match)
        s["notes"] += int(bool(r.note))
        s["seconds"] += r.count.seconds
    return {
        "cases": len(rows),
        "matches": sum(r.match for r in rows),
        "seconds": seconds,
        "protocols": by_protocol,
    }
