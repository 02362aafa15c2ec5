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
- ``all``: every protocol of every paper.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from typing import Any

from conflow.errors import InputError
from conflow.flows import AbstractFlow, GradientFlow, MomentumFlow
from conflow.laws.count import METHODS, LawCount, count_laws
from conflow.models import icnn, linear, nmf, product, relu
from conflow.models.base import Model
from conflow.reference import closed_forms


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

    @property
    def match(self) -> bool:
        return self.count.status == "ok" and self.count.n_laws == self.known

    @property
    def flow_label(self) -> str:
        return flow_label(self.count)

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "known": self.known, "match": self.match,
                "flow_label": self.flow_label, "note": self.note, **self.count.to_json()}


#: A protocol entry: one configuration ``(model, flow)``, or ``(model, [flow, …])`` for a
#: configuration counted under several flows (one `Row` each). ``flow=None`` is Euclidean GF.
Case = tuple[Model, Any]
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

    def rows(self, limit: int | None = None) -> list[tuple[Model, Any]]:
        """The (model, flow) pairs of the first ``limit`` configurations, flows expanded."""
        out = []
        for model, flows in self.cases()[:limit]:
            for flow in flows if isinstance(flows, (list, tuple)) else [flows]:
                out.append((model, flow))
        return out


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
) -> Iterator[Row]:
    """Yield one `Row` per (configuration, flow) of the paper's protocols, for the first
    ``limit`` configurations of each. ``method`` is passed to `count_laws` for every row
    (``"exact"`` forces the exact engine, e.g. for ``conflow reproduce --exact``).
    A bad ``paper`` or ``method`` raises `InputError` at the call."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    protocols = protocols_for(paper)
    return _run(protocols, limit, points, seed, method)


def _run(protocols: list[Protocol], limit, points, seed, method) -> Iterator[Row]:
    for protocol in protocols:
        known_fn = protocol.known or _closed_form_count
        for model, flow in protocol.rows(limit):
            count = count_laws(model, flow, method=method, points=points, seed=seed)
            known, note = known_fn(model, flow)
            yield Row(protocol.name, count, known, note)


def n_cases(paper: str, limit: int | None = None) -> int:
    """Number of rows `run` yields (configurations × flows)."""
    return sum(len(p.rows(limit)) for p in protocols_for(paper))


def format_row(row: Row) -> str:
    c = row.count
    found = "?" if c.n_laws is None else str(c.n_laws)
    gap = "-" if c.gap is None else "inf" if c.gap == float("inf") else f"{c.gap:.1e}"
    flag = "ok" if row.match else f"MISMATCH ({c.status})"
    if row.note:
        flag += f"; {row.note}"
    return (f"{row.protocol:<9} {c.model:<28} {row.flow_label:<24} {c.method:<7} {c.D:>5} "
            f"{found:>6} {row.known!s:>6} {gap:>9} {c.depth:>5} {c.seconds:>7.2f}  {flag}")


HEADER = (f"{'protocol':<9} {'architecture':<28} {'flow':<24} {'method':<7} {'D':>5} "
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
