"""`polynomial_laws`: grading, per-class solve and recognition put together; the readable
basis (families, products, echelon rows) and the functional independence of the laws."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from conflow.engine.rank import (
    DEFAULT_MIN_GAP,
    DEFAULT_RTOL,
    cut_spectrum,
    gap_ratio,
    normalise_rows,
)
from conflow.errors import InputError, check_int
from conflow.flows import AbstractFlow, parse_flow
from conflow.flows.decay import decay_json
from conflow.laws.count import count_laws
from conflow.laws.expressions import expression_names
from conflow.laws.find.echelon import in_span, rationalise, rref
from conflow.laws.find.grading import monomial_classes, monomial_table
from conflow.laws.find.recognise import Recogniser, add_term, families
from conflow.laws.find.results import FamilyGroup, Law, LawBasis, law_expression
from conflow.laws.find.solver import MAX_REFINE, Points, solve_classes
from conflow.models.base import Model, check_model
from conflow.precision import float64
from conflow.status import Status

OK, AMBIGUOUS = Status.OK, Status.AMBIGUOUS


@float64
def polynomial_laws(
    model: Model,
    flow: AbstractFlow | str | None = None,
    degree: int = 2,
    homogeneous: bool = False,
    *,
    seed: int = 0,
    count: Any = True,
    recognise: bool = True,
    rtol: float = DEFAULT_RTOL,
    min_gap: float = DEFAULT_MIN_GAP,
) -> LawBasis:
    """A basis of all polynomial conservation laws of ``model`` under ``flow`` of degree ≤
    ``degree`` (exactly ``degree`` with ``homogeneous=True``), in the flow's state variables.

    See `conflow.laws.find` for the method. ``count``: ``True`` runs `count_laws(model, flow)`
    for the comparison, ``False``/``None`` skips it, or pass a `LawCount` already computed.
    ``recognise=False`` skips the matrix-family recogniser (echelon basis only).
    """
    t0 = time.perf_counter()
    check_model(model)
    flow = parse_flow(flow)
    seed = check_int("seed", seed, 0)
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or degree < 1:
        raise InputError(f"degree must be an integer >= 1, got {degree!r}")
    degree = int(degree)
    flow.validate(model)
    if flow.locally_constant:
        raise InputError(f"the {flow.label} flow's fields are locally constant: its laws are only "
                         "piecewise polynomial (e.g. abs(U[0,0]) - abs(V[0,0])); test one with "
                         "verify_law instead")
    n = flow.state_dim(model)
    names = tuple(expression_names(model, flow))

    idx, monos = monomial_table(n, degree, homogeneous)
    class_of, grading = monomial_classes(model, flow, n, idx)
    pts = Points(model, flow, seed)
    val = Points(model, flow, seed + 7919, share=pts)
    results = solve_classes(class_of, idx, pts, val, rtol)
    by_class = {int(class_of[r.cols[0]]): r for r in results}

    kept = [r.sigma_kept for r in results if r.sigma_kept is not None]
    dropped = [r.sigma_dropped for r in results if r.sigma_dropped is not None]
    sigma_kept = min(kept) if kept else None
    sigma_dropped = max(dropped) if dropped else None
    gap = gap_ratio(sigma_kept, sigma_dropped)
    failed = [r for r in results if not r.ok]
    accepted = [r.validation for r in results if r.ok and r.basis.shape[0]]
    status, reason = OK, ""
    if failed:
        status = AMBIGUOUS
        reason = (f"{len(failed)} class(es) still fail validation after {MAX_REFINE} refinements"
                  f" (residual {max(r.validation for r in failed):.1e})")
    elif gap < min_gap:
        status, reason = AMBIGUOUS, f"gap {gap:.1e} below {min_gap:.0e}"

    laws, groups = _readable_basis(model, flow, monos, class_of, by_class, names, n, recognise)
    laws = tuple(dataclasses.replace(law, model=model, flow=flow) for law in laws)
    n_ind, ind_gap = _independent_count(laws, n, model, flow, seed)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    law_count = None
    if count is True:
        law_count = count_laws(model, flow, seed=seed)
    elif count not in (None, False):
        law_count = count
    seconds_count = time.perf_counter() - t1 if count is True else 0.0

    return LawBasis(
        model=model.label, dims=tuple(model.dims), flow=flow.name,
        tau=flow.tau, metric=flow.metric_name, degree=degree,
        homogeneous=bool(homogeneous), state_dim=n, variables=names, laws=laws,
        families=tuple(groups), n_independent=n_ind, independence_gap=ind_gap,
        count=law_count, status=status, reason=reason, sigma_kept=sigma_kept,
        sigma_dropped=sigma_dropped, validation_residual=max(accepted) if accepted else 0.0,
        monomials=len(monos), classes=len(results),
        largest_class=max(len(r.cols) for r in results), grading=grading,
        points=max(r.points for r in results), seconds=seconds, seconds_count=seconds_count,
        weight_decay=decay_json(flow.weight_decay), time_note=flow.time_note,
    )


def _readable_basis(model, flow, monos, class_of, by_class, names, n, recognise):
    """Per class: recognised family entries first, then products of lower-degree laws, then
    echelon rows, each kept only if independent of those already chosen (see
    `conflow.laws.find`). Returns the laws (families first, then products, then echelon rows by
    pivot) and the recognised groups."""
    column_of = {m: i for i, m in enumerate(monos)}
    position = {}
    for r in by_class.values():
        for j, c in enumerate(r.cols):
            position[int(c)] = j
    chosen: dict[int, list[np.ndarray]] = {g: [] for g in by_class}
    entries: list[tuple[tuple, Law, dict | None]] = []  # (sort key, law, exact poly or None)
    groups: list[FamilyGroup] = []
    seen: set[tuple] = set()
    rec = Recogniser(column_of, class_of, by_class, position)

    def vector(g: int, poly: dict) -> np.ndarray:
        vec = np.zeros(len(by_class[g].cols))
        for mono, c in poly.items():
            vec[position[column_of[mono]]] = float(c)
        return vec

    if recognise:
        for f_id, fam in enumerate(families(model, flow)):
            lam = rec.fit(fam)
            if lam is None:
                continue
            uni, code = fam.names(lam)
            found = []
            for i_idx, index in enumerate(fam.indices()):
                hit = rec.law(fam, lam, index)
                if hit is None:
                    continue
                g, poly = hit
                key = tuple(sorted(poly.items()))
                vec = vector(g, poly)
                if key in seen or not _independent(vec, chosen[g]):
                    continue
                chosen[g].append(vec)
                seen.add(key)
                ms = sorted(poly, key=lambda m: column_of[m])
                law = _make_law(ms, [poly[m] for m in ms], True, names, n, uni, code, index)
                entries.append(((0, f_id, i_idx), law, poly))
                found.append(index)
            if found:
                groups.append(FamilyGroup(uni, code, fam.kind, fam.size, tuple(found)))

    max_deg = {g: max(len(monos[int(c)]) for c in r.cols) for g, r in by_class.items()}
    for d in sorted(set(max_deg.values())):
        todo = [g for g in sorted(by_class) if max_deg[g] == d
                and len(chosen[g]) < by_class[g].basis.shape[0]]
        if not todo:
            continue
        if recognise:  # products of exact lower-degree laws
            factors = [(law, poly) for _, law, poly in entries
                       if poly is not None and law.degree < d]
            for (a, pa), (b, pb) in itertools.combinations_with_replacement(factors, 2):
                if a.degree + b.degree > d:
                    continue
                poly: dict = {}
                for ma, ca in pa.items():
                    for mb, cb in pb.items():
                        add_term(poly, ma + mb, ca * cb)
                parts = rec.split(poly) if poly else None
                if not parts or len(parts) != 1:
                    continue
                (g, _), = parts.items()
                if g not in todo or len(chosen[g]) == by_class[g].basis.shape[0]:
                    continue
                vec = vector(g, poly)
                if not in_span(vec, by_class[g].basis) or not _independent(vec, chosen[g]):
                    continue
                chosen[g].append(vec)
                ms = sorted(poly, key=lambda m: column_of[m])
                law = _make_law(ms, [poly[m] for m in ms], True, names, n,
                                factors=((a.label, a.code), (b.label, b.code)))
                entries.append(((1, column_of[ms[0]], 0), law, None))
        for g in todo:
            r = by_class[g]
            K = r.basis.shape[0]
            if len(chosen[g]) == K:
                continue
            R, pivots = rref(r.basis, 1e-8)
            for row, piv in zip(R, pivots):
                if len(chosen[g]) == K:
                    break
                if not _independent(row, chosen[g]):
                    continue
                chosen[g].append(row)
                nz = np.flatnonzero(row)
                ms = [monos[int(r.cols[j])] for j in nz]
                fr = rationalise(row[nz])
                exact = False
                if fr is not None:
                    exact_vec = np.zeros_like(row)
                    exact_vec[nz] = [float(f) for f in fr]
                    exact = in_span(exact_vec, r.basis, 1e-10)
                coefs = fr if exact else [float(x) for x in row[nz]]
                law = _make_law(ms, coefs, exact, names, n)
                poly = dict(zip(ms, fr)) if exact else None
                entries.append(((2, int(r.cols[piv]), 0), law, poly))
    laws = tuple(law for _, law, _ in sorted(entries, key=lambda t: t[0]))
    return laws, groups


def _independent(vec: np.ndarray, chosen: list[np.ndarray], tol: float = 1e-8) -> bool:
    if not chosen:
        return bool(np.linalg.norm(vec) > 0)
    Q, _ = np.linalg.qr(np.stack(chosen, axis=1))
    r = vec - Q @ (Q.T @ vec)
    return bool(np.linalg.norm(r) > tol * np.linalg.norm(vec))


def _make_law(monos, coefs, exact, names, n, family=None, code=None, index=None,
              factors=None) -> Law:
    return Law(
        expression=law_expression(monos, coefs, names), monomials=tuple(monos),
        coefficients=tuple(coefs), exact=exact, variables=names, state_dim=n,
        family=family, family_code=code, index=None if index is None else tuple(index),
        factors=factors,
    )


def law_gradients(laws: Sequence[Law], z: np.ndarray) -> np.ndarray:
    """Gradients of polynomial laws at one state, shape (K, n), computed from their monomials."""
    n = z.shape[0]
    G = np.zeros((len(laws), n + 1))
    zext = np.concatenate([np.asarray(z, dtype=np.float64), [1.0]])
    for i, law in enumerate(laws):
        for mono, c in zip(law.monomials, law.coefficients):
            c = float(c)
            for t in range(len(mono)):
                rest = mono[:t] + mono[t + 1 :]
                G[i, mono[t]] += c * float(np.prod(zext[list(rest)])) if rest else c
    return G[:, :n]


def gradient_cut(G: np.ndarray, rtol: float = DEFAULT_RTOL):
    """Rank cut of a stack of gradients (K, n), each row divided by its norm (a law's gradient is
    not a cancellation, so its own norm is its scale); singular values only."""
    G = np.asarray(G, dtype=np.float64)
    if G.size == 0:
        return cut_spectrum(np.zeros(0), rtol)
    rows = normalise_rows(G, np.linalg.norm(G, axis=1))
    return cut_spectrum(np.linalg.svd(rows, compute_uv=False), rtol)


def _independent_count(laws, n, model, flow, seed, points: int = 3) -> tuple[int, float]:
    """Rank of the laws' gradients at random points (the largest over the points) and its gap."""
    if not laws:
        return 0, float("inf")
    Z = np.asarray(flow.sample_points(model, np.random.default_rng([seed, 104729]), points))
    ranks, gaps = [], []
    for z in Z:
        cut = gradient_cut(law_gradients(laws, z))
        ranks.append(cut.rank)
        gaps.append(cut.gap)
    r = max(ranks)
    return r, min(g for rk, g in zip(ranks, gaps) if rk == r)
