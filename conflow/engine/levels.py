"""The level loop: W_{k+1} = W_k + [W_0, W_k] at every point, cut level by level.

Three ways to cut the levels, with the same evidence (`conflow.engine.rank.RankBand` per stack)
and the same ranks:

- `device_levels`: the traces stay on the device as orthonormal rows (`DeviceBases`): each
  stack — a whole level (``block=None``), or blocks of it — is projected off the trace by CGS2
  and cut by one batched SVD; only σ's come to the host. The default on accelerators.
- `dense_levels` (host): at each point an orthonormal basis B of the complement of the trace; a
  level's samples projected onto B, one SVD (NumPy / LAPACK). O(n³) time, O(n²) memory per point.
- `streamed_levels` (host): blocks of samples extend a Householder trace basis per point
  (`conflow.engine.streamed_basis`). O(n r²) time and O(n r) memory for a trace of dimension r.

A level is complete once a stack leaves samples to spare (samples are generic, so a stack that
does not fill has spanned all the level adds there); a costly field's bracket levels start with a
small probe stack (`first_stack`), so that the last level, which adds nothing, costs only it.
The loop stops when a level adds nothing at
any point (stagnation), when the trace is all of R^n, at the depth cap, at a time limit, or
after a level that cannot tell directions from rounding (`blind_level`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from conflow.engine.device_basis import DeviceBases, bucket
from conflow.engine.distributed import to_host
from conflow.engine.rank import (
    RankBand,
    cut_spectrum,
    direction_errors,
    normalise_rows,
    row_space_svd,
    trace_error,
)
from conflow.engine.streamed_basis import TraceBasis
from conflow.errors import InputError

#: (rows, columns, error inherited from the trace, β) of a normalised stack ↦ its `RankBand`.
BandFn = Callable[[int, int, float], RankBand]
#: ``(points, first, depth, samples[, chunk]) -> (values (P, S, L, n), scales (P, S, L))`` on the
#: device; ``chunk`` caps the samples per compiled call (the same program for every call).
Evaluate = Callable[..., tuple[Any, Any]]


@dataclasses.dataclass(frozen=True)
class LevelRecord:
    """One level W_depth of the construction.

    Attributes:
        depth: bracket depth k (0 = the generators themselves).
        samples: number of random nested brackets evaluated per point.
        ranks: dim W_depth(z_p) at each point.
        added: directions this level added at each point.
        sigma_kept: smallest singular value kept at this level (over points), or ``None``.
        sigma_dropped: largest singular value dropped at this level (over points), or ``None``.
        seconds: wall time of the level (evaluation + linear algebra).
        saturated: the level kept more directions than its samples can span, which only noise
            can do (an rtol below rounding): the count is then ambiguous.
        uncertain: the singular values of this level, at any point, that their `RankBand` does
            not settle (largest first): between the noise ceiling and the signal floor, or put
            on the wrong side of the band by a user's rtol. A count with any is ambiguous.
        noise, signal: the band of the level's first stack (``None`` if nothing was cut).
    """

    depth: int
    samples: int
    ranks: tuple[int, ...]
    added: tuple[int, ...]
    sigma_kept: float | None
    sigma_dropped: float | None
    seconds: float
    saturated: bool = False
    uncertain: tuple[float, ...] = ()
    noise: float | None = None
    signal: float | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class TraceBases:
    """A trace found at some points, in a form another count can go on from (`dense_levels`'
    ``start``).

    Attributes:
        rows: per point p, orthonormal rows spanning the trace there, shape ``(r_p, n)``, in
            the order they were found.
        errors: per point, how far each row may be off, shape ``(r_p,)``
            (`conflow.engine.rank.direction_errors`).
        depth: the last level, which added nothing (or filled R^n); −1 where the trace did not
            converge.
        kept, dropped: the smallest σ it kept and the largest it dropped (its evidence).
    """

    rows: tuple[np.ndarray, ...]
    errors: tuple[np.ndarray, ...]
    depth: int
    kept: tuple[float, ...] = ()
    dropped: tuple[float, ...] = ()

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(r.shape[0] for r in self.rows)


@dataclasses.dataclass(frozen=True)
class Levels:
    """What a level loop found: its records, the dimension at each point, every σ kept and
    dropped, whether it stagnated (or filled R^n), why it stopped early ("" if it did not),
    whether it stopped at a level that could not tell directions from rounding (`blind_level`),
    and the trace it ended with (`TraceBases`, where the loop was asked to keep it; ``None``
    otherwise)."""

    records: list[LevelRecord]
    dims: list[int]
    kept: list[float]
    dropped: list[float]
    converged: bool
    stopped: str = ""
    blind: str = ""
    final: TraceBases | None = None


#: What the reason of a count stopped by `blind_level` says.
BLIND = "cannot tell directions from rounding"


def blind_level(tally: _Tally) -> str:
    """Why the loop stops after this level, or "": a stack whose signal floor is ≥ 1 (its noise
    ceiling, raised by the errors of weak trace directions it inherits, `trace_error`, is
    ≥ 1 / `SIGNAL_RATIO`) cannot show any normalised direction clearly, and one that left
    singular values in its band makes the count ambiguous whatever follows. Deeper levels
    would only inherit more (a GELU net on 1-D inputs, kept going, grew by one direction per
    level and spent minutes compiling brackets of depth 4 and more; measured)."""
    if not tally.uncertain:
        return ""
    worst = max(tally.bands, key=lambda band: band.signal)
    if worst.signal < 1.0:
        return ""
    return (f"depth {tally.depth} {BLIND}: the weak directions "
            f"kept before it put its noise ceiling at {worst.noise:.1e} (signal floor "
            f"{worst.signal:.1e}); {len(tally.uncertain)} singular value(s) in between")


def margin(c: int) -> int:
    """Samples drawn beyond what a level can add on a c-dimensional complement."""
    return 8 + c // 16


def spare(c: int, stack: int) -> int:
    """Samples a stack of ``stack`` must leave unused on a c-dimensional complement for its
    level to be complete there (its samples are generic: a stack that does not fill has
    spanned all the level adds)."""
    return min(margin(c), max(1, stack // 4))


#: The first stack of each bracket level of a costly field (`first_stack`).
PROBE_SAMPLES = 16


def first_stack(size: int, depth: int, costly_field: bool) -> int:
    """The first stack of a level of ``size`` samples: for a costly field's bracket level
    (`conflow.engine.evaluate.costly_field`: each sample is a pass over an input sample) a
    probe of `PROBE_SAMPLES`, so that a level adding nothing — the last of every count — costs
    only the probe; otherwise the whole ``size``."""
    return min(size, PROBE_SAMPLES) if costly_field and depth > 0 else size


def n_brackets(m: int, depth: int, cap: int) -> int:
    """m^(depth+1), the number of right-nested brackets of ``depth``, or ``cap`` if larger."""
    return m ** (depth + 1) if (depth + 1) * math.log2(max(m, 2)) < 62 else cap


def samples_needed(c: int, m: int, depth: int) -> int:
    """Samples that span level ``depth`` on a complement of dimension ``c``: at most
    min(c, m^(depth+1)) new directions, a margin on top against unlucky draws, rounded up to a
    `bucket` (few distinct shapes to compile)."""
    return bucket(min(c, n_brackets(m, depth, c)) + margin(c))


class _Tally:
    """What one level's cuts found, over its stacks and points.

    ``errors[p]``: the error ε_j of each trace direction at point p, in the order they were
    added (`conflow.engine.rank.direction_errors`); `add` appends the new ones.
    """

    def __init__(self, depth: int, n_points: int, band_for: BandFn, errors: list[np.ndarray]):
        self.depth, self.band_for, self.errors = depth, band_for, errors
        self.t0 = time.perf_counter()
        self.samples = 0
        self.added = [0] * n_points
        self.kept: list[float] = []
        self.dropped: list[float] = []
        self.uncertain: list[float] = []
        self.bands: list[RankBand] = []
        self.saturated = False

    def band(self, p: int, n_rows: int, n_cols: int, beta: float) -> RankBand:
        """The band of point ``p``'s next ``n_rows × n_cols`` stack, whose rows inherit
        ``beta`` from the trace basis (`conflow.engine.rank.trace_error`)."""
        band = self.band_for(n_rows, n_cols, beta)
        self.bands.append(band)
        return band

    def cut(self, p: int, sigma: np.ndarray, n_rows: int, n_cols: int, beta: float) -> int:
        """Cut point ``p``'s σ's of an ``n_rows × n_cols`` stack inside its band; returns k."""
        band = self.band(p, n_rows, n_cols, beta)
        k = cut_spectrum(sigma, band.cut).rank
        self.add(p, band, sigma, k)
        return k

    def add(self, p: int, band: RankBand, sigma: np.ndarray, k: int) -> None:
        """Book a cut of point ``p``'s σ's that kept ``k`` of them."""
        self.uncertain.extend(band.unsettled(sigma, k).tolist())
        self.errors[p] = np.concatenate([self.errors[p], direction_errors(band, sigma, k)])
        self.added[p] += k
        self.kept.extend(sigma[:k].tolist())
        self.dropped.extend(sigma[k:].tolist())

    def record(self, ranks: list[int] | np.ndarray, seconds: float | None = None) -> LevelRecord:
        return LevelRecord(
            depth=self.depth,
            samples=self.samples,
            ranks=tuple(int(r) for r in ranks),
            added=tuple(self.added),
            sigma_kept=min(self.kept) if self.kept else None,
            sigma_dropped=max(self.dropped) if self.dropped else None,
            seconds=time.perf_counter() - self.t0 if seconds is None else seconds,
            saturated=self.saturated,
            uncertain=tuple(sorted(self.uncertain, reverse=True)),
            noise=self.bands[0].noise if self.bands else None,
            signal=self.bands[0].signal if self.bands else None,
        )


def _dims_text(dims) -> str:
    dims = [int(d) for d in dims]
    return str(dims[0]) if len(set(dims)) == 1 else f"{min(dims)}–{max(dims)}"


def _time_up(limit: float | None, depth: int, within: bool = False) -> str:
    if limit is None:
        return ""
    where = f"during depth {depth} (its blocks so far kept)" if within else f"before depth {depth}"
    return f"time limit of {limit:g} s reached {where}"


def device_levels(
    evaluate: Evaluate, bases: DeviceBases, m: int, max_depth: int, band_for: BandFn,
    block: int | None, bar: Any, expired: Callable[[], bool], time_limit: float | None = None,
    costly_field: bool = False, start: TraceBases | None = None, keep: bool = False,
) -> Levels:
    """The levels with the traces on the device: stacks of at most ``block`` samples (``None``:
    a whole level per stack) projected off `DeviceBases` and cut there; a ``costly_field``'s
    bracket levels start with a probe (`first_stack`). ``start``: a trace to go on from, as
    `dense_levels`; ``keep``: return the final trace (``final``, brought to the host)."""
    P, n = bases.n_points, bases.n
    errors, kept, dropped, min_depth = _starting(start, P)  # errors: as `_Tally`'s
    if start is not None:
        bases.start_from(start.rows, start.errors)
    records: list[LevelRecord] = []

    def ended(levels: Levels) -> Levels:
        return _with_final(levels, bases.rows(), errors) if keep else levels

    for depth in range(max_depth + 1):
        remaining = n - bases.ranks
        c = int(remaining.max())
        if c == 0:  # the trace is R^n at every point
            return ended(Levels(records, bases.ranks.tolist(), kept, dropped, True))
        if expired():
            return ended(Levels(records, bases.ranks.tolist(), kept, dropped, False,
                                _time_up(time_limit, depth)))
        bound = min(c, n_brackets(m, depth, c))
        size = samples_needed(c, m, depth)
        if block is not None:
            size = min(size, bucket(block))
        stack = first_stack(size, depth, costly_field)
        tally = _Tally(depth, P, band_for, errors)
        active = [p for p in range(P) if remaining[p] > 0]
        while active and not tally.saturated:
            values, scales = evaluate(np.arange(P), depth, depth, stack)
            tally.samples += stack
            sigma, beta, finite = bases.spectrum(values, scales, depth == 0)
            if not finite:
                raise InputError("the vector fields are not finite at a generic point: check "
                                 "that φ is differentiable there and returns finite values")
            added = np.zeros(P, dtype=int)
            still = []
            for p in active:
                c_p = n - int(bases.ranks[p])
                added[p] = tally.cut(p, sigma[p, : min(stack, c_p)], stack, c_p, beta[p])
                # more directions than the level's brackets span, or a whole stack kept when
                # it held the whole level: rounding noise was counted
                tally.saturated |= tally.added[p] > bound or (
                    added[p] >= stack and tally.samples == stack and stack > bound)
                if stack - added[p] < spare(c, stack) and c_p - added[p] > 0:
                    still.append(p)
            bases.extend(added, tally.errors)
            active = still
            stack = size
            bar.set_postfix_str(f"depth {depth}, {tally.samples} samples: dim "
                                f"{_dims_text(bases.ranks)}")
            if active and expired():
                break
        done = _close_level(tally, bases.ranks.tolist(), records, kept, dropped, bar,
                            bool(active), time_limit, depth, min_depth)
        if done is not None:
            return ended(done)
    return ended(Levels(records, bases.ranks.tolist(), kept, dropped, False))


def _close_level(tally: _Tally, ranks: list[int], records: list, kept: list, dropped: list,
                 bar: Any, interrupted: bool, time_limit: float | None, depth: int,
                 min_depth: int = 0) -> Levels | None:
    """Record a streamed level (appends to ``records``, ``kept``, ``dropped``) and return the
    `Levels` if the loop ends here: stopped inside the level by the time limit, or `_ended`;
    ``None`` to go on."""
    records.append(tally.record(ranks))
    kept.extend(tally.kept)
    dropped.extend(tally.dropped)
    bar.update(1)
    if interrupted and not tally.saturated:  # stopped inside the level
        return Levels(records, ranks, kept, dropped, False,
                      _time_up(time_limit, depth, within=True))
    return _ended(tally, records, ranks, kept, dropped, min_depth)


def _ended(tally: _Tally, records: list, dims: list[int], kept: list, dropped: list,
           min_depth: int = 0) -> Levels | None:
    """The `Levels` if the loop ends after this level: saturated, blind (`blind_level`), or
    nothing added at a depth ≥ ``min_depth`` (converged); ``None`` to go on. A blind level
    that added nothing has not converged: it could not see what it would have added."""
    if tally.saturated:
        return Levels(records, dims, kept, dropped, False)
    if blind := blind_level(tally):
        return Levels(records, dims, kept, dropped, False, blind=blind)
    if not any(tally.added) and tally.depth >= min_depth:
        return Levels(records, dims, kept, dropped, True)
    return None


def dense_levels(
    evaluate: Evaluate, P: int, n: int, m: int, max_depth: int, band_for: BandFn, bar: Any,
    expired: Callable[[], bool], time_limit: float | None = None, costly_field: bool = False,
    start: TraceBases | None = None, keep: bool = False,
) -> Levels:
    """The levels by stacking on the host: each level's samples projected on the complement,
    one SVD per point.

    For a cheap field, levels 1 and 2 share one stage (one compile instead of two). For a
    ``costly_field`` every level has its own stage, starting with a probe (`first_stack`):
    where it leaves samples to `spare` at every point, it has spanned all the level adds and
    the level is done; otherwise the rest of the level's samples are drawn (with the probe's
    compiled program) and the whole stack is cut.

    ``start``: a trace T found at the same points for fields W' among these, W' ⊆ W (the same
    network on a subset of the inputs), which stopped growing at depth d: Lie(W')(z) = T. The
    loop starts from T and stops only at a level ≥ d that adds nothing. That is the plain loop's
    test: for k ≥ d − 1, W'_k = Lie(W') ⊆ W_k near z, so T + W_k(z) = W_k(z), and a level k ≥ d
    adding nothing means W_k(z) = W_{k−1}(z). Each level's samples need only span its part off
    the trace, min(c, …) + margin on the c-dimensional complement: when the new inputs add little,
    a level costs a few samples instead of n. ``keep``: return the final trace (``final``)."""
    state = _start_state(start, P, n)
    _, kept, dropped, min_depth = _starting(start, P)
    records: list[LevelRecord] = []

    def ended(levels: Levels) -> Levels:
        return _with_final(levels, state.traces, state.errors) if keep else levels

    depth = 0
    while depth <= max_depth:
        if state.c_max == 0:  # the trace is R^n at every point
            return ended(Levels(records, state.dims, kept, dropped, True))
        if expired():
            return ended(Levels(records, state.dims, kept, dropped, False,
                                           _time_up(time_limit, depth)))
        # One compiled chain serves the levels depth..stage_depth of this stage; its evaluation
        # time is booked on the stage's first level. Stages: {0} (the generators, which need the
        # most samples but no brackets), {1, 2} for cheap fields (one compile instead of two),
        # then one level at a time (compile time roughly doubles per level).
        t_stage = time.perf_counter()
        stage_depth = min(max_depth, depth + 1 if depth == 1 and not costly_field else depth)
        # With few generators a deeper level needs more samples (min(c, m^(k+1)) + margin):
        # the stage draws what its deepest level needs, the first S_j serve level j.
        need = samples_needed(state.c_max, m, stage_depth)
        stack = first_stack(need, depth, costly_field)
        probe = stack if stack < need else None
        values, scales = (to_host(x) for x in (
            evaluate(np.arange(P), depth, stage_depth, need) if probe is None
            else evaluate(np.arange(P), depth, stage_depth, probe, probe)))
        for level in range(stage_depth - depth + 1):
            if level and state.c_max == 0:
                return ended(Levels(records, state.dims, kept, dropped, True))
            # All samples are generic, so the first S_j of them serve level j.
            s_j = samples_needed(state.c_max, m, depth)
            tally, cut = _dense_cut(values[:, :s_j, level], scales[:, :s_j, level], depth, state,
                                    band_for)
            if probe is not None and _probe_filled(tally, state, probe):
                more = (to_host(x) for x in evaluate(np.arange(P), depth, depth, s_j - probe,
                                                     probe))
                values, scales = (np.concatenate([a, b], axis=1)
                                  for a, b in zip((values, scales), more))
                tally, cut = _dense_cut(values[:, :, level], scales[:, :, level], depth, state,
                                        band_for)
            state = cut
            records.append(tally.record(
                state.dims, time.perf_counter() - t_stage if level == 0 else None))
            bar.set_postfix_str(f"depth {depth}: dim {_dims_text(state.dims)}", refresh=False)
            bar.update(1)
            kept.extend(tally.kept)
            dropped.extend(tally.dropped)
            depth += 1
            if (done := _ended(tally, records, state.dims, kept, dropped, min_depth)) is not None:
                return ended(done)
    return ended(Levels(records, state.dims, kept, dropped, False))


@dataclasses.dataclass(frozen=True)
class _DenseState:
    """The host traces of `dense_levels`, per point: orthonormal rows of the complement of the
    trace and of the trace itself (in the order found), each trace direction's error
    (`conflow.engine.rank.direction_errors`), and the trace's dimension."""

    complements: list[np.ndarray]
    traces: list[np.ndarray]
    errors: list[np.ndarray]
    dims: list[int]

    @property
    def c_max(self) -> int:
        return max(c.shape[0] for c in self.complements)


def _starting(start: TraceBases | None, P: int
              ) -> tuple[list[np.ndarray], list[float], list[float], int]:
    """What a level loop starts with: each point's direction errors, the σ's kept and dropped
    so far (the start's evidence is part of the trace's), and the depth below which a level
    that adds nothing does not end it (`dense_levels`)."""
    if start is None:
        return [np.zeros(0) for _ in range(P)], [], [], 0
    return ([np.asarray(e) for e in start.errors], list(start.kept), list(start.dropped),
            start.depth)


def _with_final(levels: Levels, rows: list[np.ndarray], errors: list[np.ndarray]) -> Levels:
    """``levels`` with its final trace: ``rows`` and ``errors`` at each point (`TraceBases`;
    its depth is the last level's where the loop converged, −1 otherwise)."""
    depth = levels.records[-1].depth if levels.converged and levels.records else -1
    final = TraceBases(tuple(rows), tuple(errors), depth, tuple(sorted(levels.kept)[:3]),
                       tuple(sorted(levels.dropped)[-3:]))
    return dataclasses.replace(levels, final=final)


def _start_state(start: TraceBases | None, P: int, n: int) -> _DenseState:
    """The dense traces before level 0: empty, or ``start``'s rows and their complements."""
    if start is None:
        return _DenseState([np.eye(n) for _ in range(P)], [np.zeros((0, n)) for _ in range(P)],
                           [np.zeros(0) for _ in range(P)], [0] * P)
    complements = []
    for rows in start.rows:  # Householder: the last n − r columns of Q are the complement
        q = np.linalg.qr(rows.T, mode="complete")[0]
        complements.append(np.ascontiguousarray(q[:, rows.shape[0]:].T))
    return _DenseState(complements, [np.asarray(r) for r in start.rows],
                       [np.asarray(e) for e in start.errors], list(start.dims))


def _dense_cut(values: np.ndarray, scales: np.ndarray, depth: int, state: _DenseState,
               band_for: BandFn) -> tuple[_Tally, _DenseState]:
    """Cut one level's stack, ``values (P, S, n)`` and ``scales (P, S)``, at every point: its
    `_Tally` and the traces extended by what it kept (``state`` is left as it was)."""
    P = len(state.complements)
    complements, traces, dims = list(state.complements), list(state.traces), list(state.dims)
    tally = _Tally(depth, P, band_for, list(state.errors))
    tally.samples = values.shape[1]
    if depth == 0:  # generators are judged against the largest of them at the point
        scales = np.broadcast_to(np.max(scales, axis=1, keepdims=True), scales.shape)
    for p, basis in enumerate(complements):
        if basis.shape[0] == 0:
            continue
        y = normalise_rows(values[p], scales[p])
        rows = y @ basis.T  # (S, c)
        sigma, vt = row_space_svd(rows)
        k = tally.cut(p, sigma, *rows.shape, trace_error(y @ traces[p].T, state.errors[p]))
        # S exceeds what the level can add, so a rank reaching S means noise was kept
        tally.saturated |= k >= rows.shape[0]
        dims[p] += k
        traces[p] = np.concatenate([traces[p], vt[:k] @ basis])
        complements[p] = vt[k:] @ basis
    return tally, _DenseState(complements, traces, tally.errors, dims)


def _probe_filled(tally: _Tally, state: _DenseState, probe: int) -> bool:
    """Whether a probe of ``probe`` samples left its level unsettled at some point. It settles
    a point where it left samples to `spare`, or found all the directions the point had left
    with samples unused."""
    room = probe - spare(state.c_max, probe)
    return not all(added <= room or added == basis.shape[0] < probe
                   for added, basis in zip(tally.added, state.complements))


def streamed_levels(
    evaluate: Evaluate, P: int, n: int, m: int, max_depth: int, band_for: BandFn, block: int,
    bar: Any, expired: Callable[[], bool], time_limit: float | None = None,
    costly_field: bool = False, start: TraceBases | None = None, keep: bool = False,
) -> Levels:
    """The levels by streaming on the host: blocks of ``block`` samples extend a Householder
    `TraceBasis` per point. Memory O(r n) per point plus one block; no level is ever stacked.
    A ``costly_field``'s bracket levels start with a probe (`first_stack`). ``start``: a trace
    to go on from, as `dense_levels`; ``keep``: return the final trace (``final``; it costs
    the r × n rows at each point)."""
    bases = ([TraceBasis(n) for _ in range(P)] if start is None
             else [TraceBasis.of_rows(rows) for rows in start.rows])
    errors, kept, dropped, min_depth = _starting(start, P)
    scale0 = np.zeros(P)  # depth 0: the largest generator so far at each point

    def ended(levels: Levels) -> Levels:
        return _with_final(levels, [b.rows for b in bases], errors) if keep else levels

    records: list[LevelRecord] = []
    for depth in range(max_depth + 1):
        remaining = [n - basis.rank for basis in bases]
        c = max(remaining)
        if c == 0:
            return ended(Levels(records, [b.rank for b in bases], kept, dropped, True))
        if expired():
            return ended(Levels(records, [b.rank for b in bases], kept, dropped, False,
                                _time_up(time_limit, depth)))
        bound = min(c, n_brackets(m, depth, c))
        size = min(samples_needed(c, m, depth), bucket(block))
        stack = first_stack(size, depth, costly_field)
        tally = _Tally(depth, P, band_for, errors)
        active = [p for p in range(P) if remaining[p] > 0]
        while active and not tally.saturated:
            values, scales = (to_host(x) for x in evaluate(np.array(active), depth, depth, stack))
            tally.samples += stack
            still = []
            for i, p in enumerate(active):
                v, s = values[i, :, 0], scales[i, :, 0]
                if depth == 0:
                    scale0[p] = max(scale0[p], float(np.max(s)))
                    s = np.full_like(s, scale0[p])
                coordinates, residual = bases[p].project(normalise_rows(v, s))
                band = tally.band(p, stack, n - bases[p].rank, trace_error(coordinates, errors[p]))
                sigma, k = bases[p].add(residual, band.cut)
                tally.add(p, band, sigma, k)
                tally.saturated |= tally.added[p] > bound
                if stack - k < spare(c, stack) and bases[p].rank < n:
                    still.append(p)
            active = still
            stack = size
            bar.set_postfix_str(f"depth {depth}, {tally.samples} samples: dim "
                                f"{_dims_text([b.rank for b in bases])}")
            if active and expired():
                break
        done = _close_level(tally, [b.rank for b in bases], records, kept, dropped, bar,
                            bool(active), time_limit, depth, min_depth)
        if done is not None:
            return ended(done)
    return ended(Levels(records, [b.rank for b in bases], kept, dropped, False))
