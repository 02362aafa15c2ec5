"""`count_laws_from_model`: `from_model` + `count_laws`, with the checks that the input sample
suffices (a recount on twice the inputs, the branch patterns at each generic point)."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from conflow.flows import AbstractFlow
from conflow.laws.count import count_laws
from conflow.models.base import Model
from conflow.models.custom import brief_error
from conflow.models.from_model import (
    INPUT_RADIUS_RANGE,
    InputsWarning,
    SampledModel,
    as_inputs,
    constant_columns,
    draw_inputs,
    from_model,
)
from conflow.precision import float64

# ------------------------------------------------------------------------------------------------
# counting with the input checks
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PatternStats:
    """Branch patterns of the sample at one generic θ.

    Attributes:
        n_switches: switch outcomes recorded per input (0: none seen, e.g. a smooth net).
        n_patterns: distinct patterns over the N inputs.
        n_varying: switches whose outcome changes over the inputs (ReLU units that the sample
            sees both on and off, …).
        n_constant: switches with the same outcome on every input (a ReLU unit always on or
            always off over the sample), fixed ones not included.
        n_fixed: switches fixed by construction: one outcome on every input at every θ tried
            (`SampledModel.fixed_switches`: guards such as ``max(0, variance)``, units dead
            whatever θ).
    """

    n_switches: int
    n_patterns: int
    n_varying: int
    n_constant: int
    n_fixed: int = 0


@dataclasses.dataclass(frozen=True)
class FromModelReport:
    """What a sampled count rests on.

    Attributes:
        kind: ``pytree`` / ``equinox`` / ``nnx`` / built-in family.
        D: parameters; n_outputs: output size per input; input_shape: shape of one input.
        n_inputs: inputs of the base sample; n_inputs_checked: of the doubled sample (or None).
        generator_rank: dim of the span of the output gradients (dim W_0) at each generic point,
            base sample; generator_rank_checked: same on the doubled sample.
        pattern_source: ``"jaxpr"`` (switch recorder), ``"patterns_fn"`` or ``None``.
        patterns: one `PatternStats` per generic point (base sample).
        notes: what the recorder did not inspect, and other caveats.
    """

    kind: str
    D: int
    n_outputs: int
    input_shape: tuple[int, ...]
    n_inputs: int
    n_inputs_checked: int | None
    generator_rank: tuple[int, ...]
    generator_rank_checked: tuple[int, ...] | None
    pattern_source: str | None
    patterns: tuple[PatternStats, ...]
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["patterns"] = [dataclasses.asdict(p) for p in self.patterns]
        return out


@dataclasses.dataclass(frozen=True)
class FromModelCount:
    """`count_laws` on a sampled model, with the doubled-sample check.

    Attributes:
        model: the `SampledModel` (base sample).
        count: the `LawCount` on the base sample (N inputs).
        recount: the `LawCount` on 2N inputs (the base ones plus N more), or ``None``.
        stable: the recount has the same status, count and per-point dimensions (``None``
            without a recount). An ambiguous count can be stable (e.g. generic points in
            different activation regions with different local counts).
        report: the `FromModelReport`.
        warnings: the warnings issued (also sent through `warnings.warn`).
        seconds: total wall time.
    """

    model: SampledModel
    count: Any
    recount: Any
    stable: bool | None
    report: FromModelReport
    warnings: tuple[str, ...]
    seconds: float

    @property
    def best(self) -> Any:
        """The count on the largest sample."""
        return self.recount if self.recount is not None else self.count

    @property
    def n_laws(self) -> int | None:
        """Laws counted on the largest sample (an upper bound of the true count if not stable)."""
        return self.best.n_laws

    @property
    def status(self) -> str:
        return self.best.status

    def to_json(self) -> dict[str, Any]:
        return {
            "n_laws": self.n_laws, "status": self.status, "stable": self.stable,
            "warnings": list(self.warnings), "report": self.report.to_json(),
            "count": self.count.to_json(),
            "recount": None if self.recount is None else self.recount.to_json(),
            "seconds": self.seconds,
        }

    def summary(self) -> str:
        r = self.report
        c = self.best
        head = (f"{self.model.label}: {c.n_laws} conservation laws" if c.status == "ok"
                else f"{self.model.label}: {c.status.upper()} ({c.reason})")
        if self.recount is not None:
            head += (f" (same with {r.n_inputs} and {r.n_inputs_checked} inputs)" if self.stable
                     else f" (UNSTABLE: {self.count.n_laws} with {r.n_inputs} inputs, "
                          f"{self.recount.n_laws} with {r.n_inputs_checked})")
        ranks = " ".join(map(str, r.generator_rank))
        if ranks:  # a numeric count's level 0 (an exact count has no points to show)
            ranks = f"; output-gradient rank per point: {ranks}" + (
                "" if not r.generator_rank_checked else
                f" ({' '.join(map(str, r.generator_rank_checked))} with "
                f"{r.n_inputs_checked} inputs)")
        lines = [head,
                 f"  rests on {r.n_inputs} inputs of shape {r.input_shape} × {r.n_outputs} outputs"
                 f" ({r.kind}, D = {r.D}){ranks}"]
        if r.patterns and r.patterns[0].n_switches:
            p = min(r.patterns, key=lambda s: s.n_patterns)
            const = max(s.n_constant for s in r.patterns)
            fixed = (f"{p.n_fixed} fixed by construction (one outcome at every θ tried), "
                     "the others: " if p.n_fixed else "")
            lines.append(f"  branch patterns ({r.pattern_source}): ≥ {p.n_patterns} distinct over "
                         f"{r.n_inputs} inputs at each point; {p.n_switches} switches, {fixed}"
                         + ("each changes over the inputs" if not const else
                            f"up to {const} never change at some point"))
        elif r.pattern_source:
            lines.append(f"  branch patterns ({r.pattern_source}): no switch seen (smooth model)")
        lines += [f"  note: {n}" for n in r.notes]
        lines += [f"  WARNING: {w}" for w in self.warnings]
        lines += ["  " + line for line in c.summary().splitlines()[1:]]
        return "\n".join(lines)


def _extra_inputs(inputs: np.ndarray, seed: int, times: int = 1) -> np.ndarray:
    """``times`` · N more inputs like ``inputs``: Gaussian with their per-coordinate mean and std
    (floats), uniform integers in their range (integers)."""
    rng = np.random.default_rng([seed, 0xC0F] + ([times] if times > 1 else []))
    shape = (times * inputs.shape[0],) + inputs.shape[1:]
    if inputs.dtype.kind == "f":
        mu, sd = inputs.mean(axis=0), inputs.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0) if inputs.shape[0] > 1 else np.ones_like(sd)
        return mu + sd * rng.standard_normal(shape)
    lo, hi = int(inputs.min()), int(inputs.max())
    return rng.integers(lo, hi + 1, shape).astype(inputs.dtype)


def _more_inputs(model: SampledModel, times: int) -> np.ndarray:
    """``times`` · N inputs drawn as the sample was (its own law, or like the given inputs)."""
    if model.input_source == "gaussian":
        rng = np.random.default_rng([model.seed, 1] + ([times] if times > 1 else []))
        return draw_inputs(rng, times * model.n_inputs, model.input_shape, model.input_radius)
    return _extra_inputs(model.inputs, model.seed, times)


#: The recount also gets the inputs, among this many times N more drawn like the sample, whose
#: activation cell at a counted point no input of the sample reaches (at most N of them).
#: A bias-free leaky-ReLU net [6, 2, 13, 3] sees its inputs through 2 units: its 15 kink lines in
#: that plane cut thin cones, and 206 or 412 inputs reached 19–21 of 24 cells and counted 16 laws
#: (one too many), 4,000 reached all 24 and counted 15; so did the recount on 412 + the 104
#: inputs found here.
CELL_PROBE_TIMES = 16


def _missed_cell_inputs(model: SampledModel, thetas: np.ndarray) -> np.ndarray:
    """Inputs of activation cells (at ``thetas``) that the sample misses: `CELL_PROBE_TIMES` · N
    drawn like it, of which at most N whose cell is new (`SampledModel.missed_cells`)."""
    probe = _more_inputs(model, CELL_PROBE_TIMES).astype(model.inputs.dtype)
    return probe[model.missed_cells(thetas, probe)[: model.n_inputs]]


def _same_count(a: Any, b: Any) -> bool:
    """Same status, count and per-point dimensions (an ambiguous count can be stable too)."""
    same = a.status == b.status and a.n_laws == b.n_laws
    if a.trace is None or b.trace is None:  # an exact count has no per-point dimensions
        return same
    return same and a.trace.point_dims == b.trace.point_dims


def _same_functions(count: Any, model: SampledModel, model2: SampledModel, seed: int,
                    count_kwargs: dict) -> Any:
    """The recount without counting, where it would repeat the first count: when that count
    ran on a spanning subset of its inputs (`SampledModel.spanning_sample`) and the outputs on
    twice the inputs span as many functions of θ, they span the same ones (the first sample is
    part of the second), so the fields and the count are the same. The first count, relabelled
    and saying so; ``None`` otherwise."""
    if not count.sample_reduction or not count_kwargs.get("reduce_inputs", True):
        return None
    first, second = model.spanned_functions(seed), model2.spanned_functions(seed)
    if first is None or second is None or first[1] != second[1]:
        return None
    return dataclasses.replace(count, model=model2.label, sample_reduction=(
        f"the outputs on {model2.n_inputs} inputs span the same {second[1]} functions of θ as "
        f"on {model.n_inputs} (φ at {second[2]} random points): same fields, same count"))


def _without_basis(count: Any) -> Any:
    """``count`` without the trace basis it kept for the recount to go on from."""
    if count.trace is None or count.trace.basis is None:
        return count
    return dataclasses.replace(count, trace=dataclasses.replace(count.trace, basis=None))


def _theta_points(count: Any, model: Model, seed: int, points: int) -> np.ndarray:
    """The θ part of the generic points a count used."""
    if count.trace is not None:
        z = np.asarray(count.trace.points)
        return z if z.shape[1] == model.D else z[:, 1 : model.D + 1]
    return np.asarray(model.sample_points(seed, points))


def _pattern_stats(model: SampledModel, thetas: np.ndarray) -> tuple[PatternStats, ...]:
    out = []
    fixed = model.fixed_switches()
    for theta in thetas:
        pat = model.patterns(theta)
        if pat.ndim != 2:
            pat = pat.reshape(pat.shape[0], -1)
        constant = constant_columns(pat)
        n_pat = len({row.tobytes() for row in pat}) if pat.shape[1] else 1
        out.append(PatternStats(int(pat.shape[1]), n_pat, int(np.sum(~constant)),
                                int(np.sum(constant & ~fixed)), int(fixed.sum())))
    return tuple(out)


def _idle_names(model: SampledModel, thetas: np.ndarray) -> list[str]:
    """The parameters that move no output at some of the θ's (`SampledModel.idle_parameters`)."""
    idle = np.any([model.idle_parameters(theta) for theta in thetas], axis=0)
    return [name for name, i in zip(model.param_names, idle) if i]


@float64
def count_laws_from_model(
    apply_fn: Any,
    params: Any = None,
    inputs: Any = None,
    *,
    flow: AbstractFlow | str | None = None,
    check_inputs: bool | Any = True,
    patterns: bool = True,
    n_inputs: int | None = None,
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
    name: str = "from_model",
    patterns_fn: Callable[[Any, Any], Any] | None = None,
    input_radius: float = INPUT_RADIUS_RANGE,
    **count_kwargs: Any,
) -> FromModelCount:
    """`from_model` + `count_laws`, rerun on twice the inputs to check the sample suffices.

    ``apply_fn`` may also be a `SampledModel` (e.g. a built-in ``softmax_layer``), then the other
    model arguments are ignored. ``check_inputs``: ``True`` adds N inputs drawn like the sample
    (`draw_inputs`; for given float inputs, Gaussian with their per-coordinate mean and std); an
    array gives the extra inputs; ``False`` skips the recount. ``patterns``: compute the
    branch-pattern statistics. ``seed`` seeds both the drawn inputs and `count_laws` (its generic
    points); ``count_kwargs`` go to `count_laws` (method, points, max_depth, …).

    An `InputsWarning` is issued when the recount differs (the base sample was too small or missed
    activation regions) or when some recorded switch never changes over the sample at a point
    (e.g. a ReLU unit always on or off: its generators may be missing).
    """
    t0 = time.perf_counter()
    if isinstance(apply_fn, SampledModel):
        model = apply_fn
    else:
        model = from_model(apply_fn, params, inputs, n_inputs=n_inputs, input_shape=input_shape,
                           seed=seed, name=name, patterns_fn=patterns_fn,
                           input_radius=input_radius)
    keep_basis = count_kwargs.pop("keep_basis", False)
    recounting = check_inputs is not False and check_inputs is not None
    count = count_laws(model, flow, seed=seed, keep_basis=keep_basis or recounting,
                       **count_kwargs)
    recount = None
    model2 = None
    thetas = _theta_points(count, model, seed, count_kwargs.get("points", 3))
    if recounting:
        if check_inputs is True:
            extra = np.concatenate([_more_inputs(model, 1),
                                    _missed_cell_inputs(model, thetas)])
        else:
            extra = as_inputs(check_inputs, model.input_shape)
        model2 = model.with_inputs(np.concatenate([model.inputs, extra.astype(model.inputs.dtype)]))
        # the recount's fields include the count's: it goes on from the count's trace
        recount = (_same_functions(count, model, model2, seed, count_kwargs)
                   or count_laws(model2, flow, seed=seed, keep_basis=keep_basis, extends=count,
                                 **count_kwargs))
        if not keep_basis:
            count, recount = _without_basis(count), _without_basis(recount)

    messages: list[str] = []
    stable = None
    if recount is not None:
        stable = _same_count(count, recount)
        if not stable:
            only_dims = (count.n_laws, count.status) == (recount.n_laws, recount.status)

            def said(c: Any) -> str:  # with the per-point dimensions where only they differ
                dims = f", point dimensions {c.trace.point_dims}" if only_dims else ""
                return f"{c.n_laws} ({c.status}{dims})"

            messages.append(
                f"the count changed with more inputs: {said(count)} with {model.n_inputs} "
                f"inputs, {said(recount)} with {model2.n_inputs}; the sample does not cover "
                "the model — add inputs")

    stats: tuple[PatternStats, ...] = ()
    notes: tuple[str, ...] = ()
    source = None
    if patterns:
        source = "patterns_fn" if model.patterns_fn is not None else "jaxpr"
        try:
            stats = _pattern_stats(model, thetas)
            notes = model.pattern_notes()
        except Exception as e:  # noqa: BLE001 - a diagnostic must not break the count
            stats, notes = (), (f"branch patterns not computed: {brief_error(e)}",)
        if stats and max(s.n_constant for s in stats):
            messages.append(
                f"{max(s.n_constant for s in stats)} recorded switch(es) never change over the "
                f"{model.n_inputs} inputs at some generic point (a ReLU unit always on or off "
                "there?): if they are activations, the sample may miss their generators and the "
                "count may be too high")
        idle = _idle_names(model, thetas) if stats else []
        if idle:
            shown = ", ".join(idle[:4]) + (", …" if len(idle) > 4 else "")
            messages.append(
                f"{len(idle)} parameter(s) ({shown}) move no output on the {model.n_inputs} "
                "inputs at some generic point (a unit dead there, or by construction?): they "
                "are conserved there, and counted as laws")

    def ranks(c):
        return tuple(c.trace.levels[0].ranks) if c.trace is not None and c.trace.levels else ()

    report = FromModelReport(
        kind=model.kind, D=model.D, n_outputs=model.n_outputs, input_shape=model.input_shape,
        n_inputs=model.n_inputs, n_inputs_checked=None if model2 is None else model2.n_inputs,
        generator_rank=ranks(count), generator_rank_checked=None if recount is None
        else ranks(recount), pattern_source=source, patterns=stats, notes=notes,
    )
    for m in messages:
        warnings.warn(m, InputsWarning, stacklevel=2)
    return FromModelCount(model=model, count=count, recount=recount, stable=stable, report=report,
                          warnings=tuple(messages), seconds=time.perf_counter() - t0)
