"""The recogniser: matrix and vector families built from the parameter blocks (Gram differences,
row/column sums, antisymmetric cross-Grams) matched against the per-class law spaces."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np

from conflow.flows import AbstractFlow
from conflow.laws.expressions import identifier, time_name
from conflow.laws.find.echelon import MAX_DENOMINATOR, in_span
from conflow.laws.find.solver import ClassResult
from conflow.models.base import Model


@dataclasses.dataclass(frozen=True)
class _Piece:
    uni: str
    code: str
    size: int
    kind: str  # "sym", "antisym", "vector", "diag" (a symmetric matrix that is diagonal)
    block: str
    entry: Callable[[tuple[int, ...]], dict[tuple[int, ...], Fraction]]


def _block_vars(model: Model, flow: AbstractFlow) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Block name → (state indices of θ entries, of velocity entries or None), block-shaped."""
    momentum = flow.has_velocity
    offset = 1 if flow.has_time else 0  # the time coordinate s comes first
    D, out, start = model.D, {}, 0
    for b in model.blocks:
        ids = np.arange(start, start + b.size).reshape(b.shape)
        out[b.name] = (ids + 1, ids + 1 + D) if momentum else (ids + offset, None)
        start += b.size
    return out


def add_term(poly: dict, mono: tuple[int, ...], c: Fraction) -> None:
    key = tuple(sorted(mono))
    val = poly.get(key, Fraction(0)) + c
    if val:
        poly[key] = val
    else:
        poly.pop(key, None)


def _gram(x: np.ndarray, y: np.ndarray, transpose_first: bool):
    """Entry function of XᵀY (transpose_first) or XYᵀ, X and Y index arrays of equal shape."""
    def entry(ij):
        a, b = ij
        poly: dict = {}
        if transpose_first:
            for i in range(x.shape[0]):
                add_term(poly, (int(x[i, a]), int(y[i, b])), Fraction(1))
        else:
            for j in range(x.shape[1]):
                add_term(poly, (int(x[a, j]), int(y[b, j])), Fraction(1))
        return poly
    return entry


def _asym(f):
    def entry(ij):
        a, b = ij
        poly = dict(f((a, b)))
        for mono, c in f((b, a)).items():
            add_term(poly, mono, -c)
        return poly
    return entry


def _pieces(model: Model, flow: AbstractFlow) -> list[_Piece]:
    """Matrix- and vector-valued pieces built from the blocks (see `conflow.laws.find`)."""
    momentum = flow.has_velocity
    out: list[_Piece] = []
    bvars = _block_vars(model, flow)
    for b in model.blocks:
        x, dx = bvars[b.name]
        nm = identifier(b.name)
        if len(b.shape) == 2:
            r, c = b.shape
            if not momentum:
                out.append(_Piece(f"{nm}ᵀ{nm}", f"{nm}.T @ {nm}", c, "sym", b.name,
                                  _gram(x, x, True)))
                out.append(_Piece(f"{nm}{nm}ᵀ", f"{nm} @ {nm}.T", r, "sym", b.name,
                                  _gram(x, x, False)))
                out.append(_Piece(f"colsum({nm})", f"sum({nm}, axis=0)", c, "vector", b.name,
                                  lambda k, x=x: {(int(x[i, k[0]]),): Fraction(1)
                                                  for i in range(x.shape[0])}))
                out.append(_Piece(f"rowsum({nm})", f"sum({nm}, axis=1)", r, "vector", b.name,
                                  lambda k, x=x: {(int(x[k[0], j]),): Fraction(1)
                                                  for j in range(x.shape[1])}))
                g1, g2 = _gram(x, x, True), _gram(x, x, False)
                out.append(_Piece(f"diag({nm}ᵀ{nm})", f"diag({nm}.T @ {nm})", c, "vector",
                                  b.name, lambda k, g=g1: g((k[0], k[0]))))
                out.append(_Piece(f"diag({nm}{nm}ᵀ)", f"diag({nm} @ {nm}.T)", r, "vector",
                                  b.name, lambda k, g=g2: g((k[0], k[0]))))
            else:
                d = "d" + nm
                out.append(_Piece(f"Asym({nm}ᵀ{d})", f"({nm}.T @ {d} - {d}.T @ {nm})", c,
                                  "antisym", b.name, _asym(_gram(x, dx, True))))
                out.append(_Piece(f"Asym({nm}{d}ᵀ)", f"({nm} @ {d}.T - {d} @ {nm}.T)", r,
                                  "antisym", b.name, _asym(_gram(x, dx, False))))
        elif len(b.shape) == 1 and not momentum:
            (ell,) = b.shape
            out.append(_Piece(f"diag({nm}²)", f"diag({nm}**2)", ell, "diag", b.name,
                              lambda ij, x=x: ({(int(x[ij[0]]), int(x[ij[0]])): Fraction(1)}
                                               if ij[0] == ij[1] else {})))
            out.append(_Piece(f"{nm}²", f"{nm}**2", ell, "vector", b.name,
                              lambda k, x=x: {(int(x[k[0]]), int(x[k[0]])): Fraction(1)}))
            out.append(_Piece(nm, nm, ell, "vector", b.name,
                              lambda k, x=x: {(int(x[k[0]]),): Fraction(1)}))
    return out


@dataclasses.dataclass(frozen=True)
class _Family:
    pieces: tuple[_Piece, ...]
    kind: str  # "sym", "antisym", "vector"
    size: int
    factor: tuple[int, ...]  # monomial multiplying every entry (time factor), () if none
    factor_uni: str
    factor_code: str

    def indices(self) -> list[tuple[int, ...]]:
        n = self.size
        if self.kind == "vector":
            return [(k,) for k in range(n)]
        if self.kind == "antisym":
            return [(a, b) for a in range(n) for b in range(a + 1, n)]
        return [(a, a) for a in range(n)] + [(a, b) for a in range(n) for b in range(a + 1, n)]

    def entries(self, index) -> list[dict]:
        out = []
        for p in self.pieces:
            poly = p.entry(index)
            if self.factor:
                poly = {tuple(sorted(m + self.factor)): c for m, c in poly.items()}
            out.append(poly)
        return out

    def names(self, lam: Sequence[Fraction]) -> tuple[str, str]:
        uni, code = "", ""
        for i, (p, c) in enumerate(zip(self.pieces, lam)):
            sign = "−" if c < 0 else "+"
            mag = abs(c)
            coef_u = "" if mag == 1 else f"{mag}·"
            coef_c = "" if mag == 1 else f"{mag}*"
            if i == 0:
                uni += ("−" if c < 0 else "") + coef_u + p.uni
                code += ("-" if c < 0 else "") + coef_c + p.code
            else:
                uni += f" {sign} {coef_u}{p.uni}"
                code += f" {'-' if c < 0 else '+'} {coef_c}{p.code}"
        uni = uni if len(self.pieces) == 1 and not self.factor_uni else f"({uni})"
        code = f"({code})"
        if self.factor_uni:
            uni, code = f"{self.factor_uni}·{uni}", f"({self.factor_code}*{code})"
        return uni, code


def families(model: Model, flow: AbstractFlow) -> list[_Family]:
    pieces = _pieces(model, flow)
    fams: list[_Family] = []
    if flow.has_velocity:
        tau = flow.tau
        power = 3 if tau is None else (1 if tau else 0)
        tn = time_name(flow)
        factor = (0,) * power
        fu = "" if power == 0 else (tn if power == 1 else f"{tn}³")
        fc = "" if power == 0 else (tn if power == 1 else f"{tn}**3")
        anti = [p for p in pieces if p.kind == "antisym"]
        for p, q in itertools.combinations(anti, 2):
            if p.block != q.block and p.size == q.size and p.size >= 2:
                fams.append(_Family((p, q), "antisym", p.size, factor, fu, fc))
        return fams
    mats = [p for p in pieces if p.kind == "sym"]
    diags = [p for p in pieces if p.kind == "diag"]
    vecs = [p for p in pieces if p.kind == "vector"]
    for p, q in itertools.combinations(mats, 2):
        if p.block != q.block and p.size == q.size:
            fams.append(_Family((p, q), "sym", p.size, (), "", ""))
            for b in diags:
                if b.size == p.size:
                    fams.append(_Family((p, q, b), "sym", p.size, (), "", ""))
    sums = [p for p in vecs if p.uni.startswith(("colsum", "rowsum"))]
    squares = [p for p in vecs if not p.uni.startswith(("colsum", "rowsum")) and "²" in p.uni
               or p.uni.startswith("diag(")]
    for p, q in itertools.combinations(sums, 2):
        if p.block != q.block and p.size == q.size:
            fams.append(_Family((p, q), "vector", p.size, (), "", ""))
    for p in sums:
        for q in squares:
            if q.block != p.block and q.size == p.size and q.uni.startswith("diag("):
                fams.append(_Family((p, q), "vector", p.size, (), "", ""))
                for b in squares:
                    if b.size == p.size and "²" in b.uni and not b.uni.startswith("diag("):
                        fams.append(_Family((p, q, b), "vector", p.size, (), "", ""))
    for p in sums:  # a single block's sums (softmax layer: column sums, MATH.md §2.8)
        fams.append(_Family((p,), "vector", p.size, (), "", ""))
    if flow.has_time:  # weight decay: the laws H(e^{Λ(t)}θ)
        return _decayed(fams, flow)
    return fams


def _piece_degree(p: _Piece) -> int | None:
    """The degree of a piece's entries in θ (None if not homogeneous)."""
    poly = p.entry((0,) if p.kind == "vector" else (0, 0))
    degrees = {len(m) for m in poly}
    return degrees.pop() if len(degrees) == 1 else None


def _decayed(fams: list[_Family], flow: AbstractFlow) -> list[_Family]:
    """Under a constant weight decay λ the laws are H(sθ), s = e^{λt} (MATH.md §2.10): a family
    homogeneous of degree k in θ gets the factor s^k; mixed-degree families (and every family
    when λ is a function of t: then e^{Λ(t)} is not polynomial in s = t) are dropped."""
    if flow.time_name != "s":
        return []
    out = []
    for fam in fams:
        degrees = {_piece_degree(p) for p in fam.pieces}
        if len(degrees) != 1 or None in degrees:
            continue
        k = degrees.pop()
        uni = "s" if k == 1 else f"s{str(k).translate(_SUPERSCRIPTS)}"
        code = "s" if k == 1 else f"s**{k}"
        out.append(dataclasses.replace(fam, factor=(0,) * k, factor_uni=uni, factor_code=code))
    return out


_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


class Recogniser:
    """Matches family entries against the per-class law spaces."""

    def __init__(self, column_of: dict, class_of: np.ndarray, results: dict[int, ClassResult],
                 position: dict[int, int]):
        self.column_of, self.class_of, self.results = column_of, class_of, results
        self.position = position  # column -> position inside its class

    def split(self, poly: dict) -> dict[int, np.ndarray] | None:
        """Class id → dense coefficient vector over the class's columns (None if a monomial is
        outside the search space)."""
        parts: dict[int, np.ndarray] = {}
        for mono, c in poly.items():
            col = self.column_of.get(mono)
            if col is None:
                return None
            g = int(self.class_of[col])
            if g not in parts:
                parts[g] = np.zeros(len(self.results[g].cols))
            parts[g][self.position[col]] += float(c)
        return parts

    def residual(self, parts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        out = {}
        for g, v in parts.items():
            B = self.results[g].basis
            out[g] = v - B.T @ (B @ v) if B.shape[0] else v
        return out

    def fit(self, fam: _Family) -> list[Fraction] | None:
        """The family's coefficients λ (first = 1), from its first entries, or None."""
        for index in fam.indices()[:3]:
            polys = fam.entries(index)
            if any(not p for p in polys):
                continue
            splits = [self.split(p) for p in polys]
            if any(s is None for s in splits):
                return None
            keys = sorted(set().union(*[s.keys() for s in splits]))
            cols = []
            for s in splits:
                res = self.residual(s)
                nrm = np.sqrt(sum(float(v @ v) for v in s.values()))
                cols.append(np.concatenate([res.get(g, np.zeros(len(self.results[g].cols)))
                                            for g in keys]) / nrm)
            B = np.stack(cols, axis=1)
            _, sv, vt = np.linalg.svd(B, full_matrices=False)
            sv = np.concatenate([sv, np.zeros(B.shape[1] - sv.size)])
            if sv[-1] > 1e-8 or (sv.size > 1 and sv[-2] < 1e-6):
                continue
            lam = vt[-1]
            norms = [np.sqrt(sum(float(v @ v) for v in s.values())) for s in splits]
            lam = lam / np.asarray(norms)
            if abs(lam[0]) < 1e-9 or np.any(np.abs(lam) < 1e-9):
                continue
            lam = lam / lam[0]
            fr = [Fraction(float(x)).limit_denominator(MAX_DENOMINATOR) for x in lam]
            if max(abs(float(f) - x) for f, x in zip(fr, lam)) > 1e-7:
                continue
            return fr
        return None

    def law(self, fam: _Family, lam, index) -> tuple[int, dict] | None:
        """(class, exact polynomial) if the entry is a nonzero law living in one class."""
        poly: dict = {}
        for c, p in zip(lam, fam.entries(index)):
            for mono, v in p.items():
                add_term(poly, mono, c * v)
        if not poly:
            return None
        parts = self.split(poly)
        if parts is None or len(parts) != 1:
            return None
        (g, v), = parts.items()
        if not in_span(v, self.results[g].basis):
            return None
        return g, poly
