"""Blind reruns of the papers' experiments (MATH.md §6).

Each protocol draws its architectures from a fixed seed, counts every one with `count_laws`
(never told the expected number), and compares afterwards with the number of independent
closed-form laws of the literature (the rank of their gradients at a generic point, as in the
reference notebooks). A row matches when the count is ``ok`` and equal to that number.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from typing import Any

from .laws import LawCount, count_laws
from .models import linear, product, relu
from .models.base import Model


@dataclasses.dataclass(frozen=True)
class Row:
    """One architecture of a protocol: the blind count and the closed-form comparison."""

    protocol: str
    count: LawCount
    known: int | None

    @property
    def match(self) -> bool:
        return self.count.status == "ok" and self.count.n_laws == self.known

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "known": self.known, "match": self.match,
                **self.count.to_json()}


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A named list of (model, flow) cases built from a fixed seed."""

    name: str
    description: str
    cases: Callable[[], list[tuple[Model, Any]]]


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


PROTOCOLS: dict[str, list[Protocol]] = {
    "gradient": [
        Protocol("product", "φ = x1⋯xD, D ∈ {2,3,4,5,8}", _products),
        Protocol("linear", "50 deep linear nets, depth 2–4, widths 2–5 (seed 0)", _linear_nets),
        Protocol("relu", "50 deep ReLU nets, depth 2–4, widths 2–9, bias w.p. ½ (seed 1)",
                 _relu_nets),
    ],
}
PAPERS = tuple(PROTOCOLS) + ("all",)


def protocols_for(paper: str) -> list[Protocol]:
    if paper == "all":
        return [p for ps in PROTOCOLS.values() for p in ps]
    return PROTOCOLS[paper]


def run(
    paper: str = "gradient", *, limit: int | None = None, points: int = 3, seed: int = 0
) -> Iterator[Row]:
    """Yield one `Row` per case of the paper's protocols (the first ``limit`` of each)."""
    for protocol in protocols_for(paper):
        cases = protocol.cases()[:limit]
        for model, flow in cases:
            count = count_laws(model, flow, points=points, seed=seed)
            yield Row(protocol.name, count, model.closed_form_count())


def n_cases(paper: str, limit: int | None = None) -> int:
    return sum(len(p.cases()[:limit]) for p in protocols_for(paper))


def format_row(row: Row) -> str:
    c = row.count
    found = "?" if c.n_laws is None else str(c.n_laws)
    gap = "inf" if c.gap == float("inf") else f"{c.gap:.1e}"
    flag = "ok" if row.match else f"MISMATCH ({c.status})"
    return (f"{row.protocol:<8} {c.model:<28} {c.flow:<9} {c.D:>5} {found:>6} {row.known!s:>6} "
            f"{gap:>9} {c.depth:>5} {c.seconds:>7.2f}  {flag}")


HEADER = (f"{'protocol':<8} {'architecture':<28} {'flow':<9} {'D':>5} {'laws':>6} {'known':>6} "
          f"{'gap':>9} {'depth':>5} {'seconds':>7}")


def summarise(rows: list[Row], seconds: float) -> dict[str, Any]:
    by_protocol: dict[str, dict[str, Any]] = {}
    for r in rows:
        s = by_protocol.setdefault(r.protocol, {"cases": 0, "matches": 0, "seconds": 0.0})
        s["cases"] += 1
        s["matches"] += int(r.match)
        s["seconds"] += r.count.seconds
    return {
        "cases": len(rows),
        "matches": sum(r.match for r in rows),
        "seconds": seconds,
        "protocols": by_protocol,
    }
