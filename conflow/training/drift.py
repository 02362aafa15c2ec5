"""Drift reports: how far each monitored law moved along a run, against the noise floor.

For a run of `conflow.training.simulate.simulate` or `conflow.training.optimizers.train` (anything with ``times``,
``values``, ``loss``, ``distance``, ``scale`` and ``error``), `drift_report` computes for each
monitored law h (a scalar or an array of laws; the maximum over its components is taken)

- the absolute drift |h(t) − h(0)|, and the relative drift |h(t) − h(0)| / |h(0)| — relative to
  ‖θ(0)‖² instead when h(0) ≈ 0 (quadratic laws scale like ‖θ‖²; ``scales`` overrides);
- the noise floor it is judged against: the integrator's error estimate for that law (the run's
  ``error``, from ``estimate_error=True``) when the run has one, otherwise the relative drift of
  a ``reference`` law known to be conserved by the flow (a known law measures what the
  integrator and rounding do to an exact invariant), and never less than 1e-12; a law is
  **conserved** when its relative drift stays within ``factor`` × its floor, otherwise it
  **drifts**; without an error estimate the reference itself is reported as ``reference``;
- whether the trajectory moved at all (max ‖θ(t) − θ(0)‖ / ‖θ(0)‖ ≥ ``moved_threshold``): a law
  "conserved" along a trajectory that did not move proves nothing, so its verdict is then
  ``not moved``.

`loglog_slope` fits drift ∝ step^p (MATH.md §5: GD drift of a gradient-flow law has p = 2 per step,
p = 1 at a fixed time horizon).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from conflow.errors import InputError
from conflow.precision import float64

ZERO_LAW = 1e-12  # |h(0)| below this times ‖θ(0)‖² counts as zero
MIN_FLOOR = 1e-12


def _flat(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return v.reshape(v.shape[0], -1)


@dataclasses.dataclass
class LawDrift:
    """Drift of one monitored law (components flattened; maxima over components)."""

    name: str
    times: np.ndarray
    absolute: np.ndarray  # (T,)
    relative: np.ndarray  # (T,)
    scale: float  # denominator of `relative`
    scale_kind: str  # "|h(0)|", "‖θ(0)‖²" or "given"
    error: np.ndarray | None  # (T,) integrator error estimate, absolute, or None
    floor: float  # relative noise floor the law is judged against
    conserved: bool
    verdict: str  # "conserved", "drifts", "not moved", or "reference" (the floor itself)

    @property
    def max_absolute(self) -> float:
        return float(np.max(self.absolute))

    @property
    def max_relative(self) -> float:
        return float(np.max(self.relative))

    @property
    def final_relative(self) -> float:
        return float(self.relative[-1])

    def to_json(self) -> dict[str, Any]:
        return {
            "max_absolute": self.max_absolute,
            "max_relative": self.max_relative,
            "final_absolute": float(self.absolute[-1]),
            "final_relative": self.final_relative,
            "scale": self.scale,
            "scale_kind": self.scale_kind,
            "error_estimate": None if self.error is None else float(np.max(self.error)),
            "floor": self.floor,
            "conserved": self.conserved,
            "verdict": self.verdict,
        }


@dataclasses.dataclass
class DriftReport:
    """Drift of every monitored law of a run (`drift_report`)."""

    flow: str
    laws: dict[str, LawDrift]
    reference: str | None
    reference_floor: float | None  # max relative drift of the reference law
    moved: bool
    displacement: float  # max ‖θ(t) − θ(0)‖ / ‖θ(0)‖
    loss_initial: float
    loss_final: float
    times: np.ndarray
    loss: np.ndarray  # the loss at the recorded times

    def summary(self) -> str:
        t = self.times
        lines = [
            f"{self.flow}: t = {t[0]:g} → {t[-1]:g}; trajectory "
            + ("moved" if self.moved else "did NOT move")
            + f" (max ‖θ(t) − θ(0)‖/‖θ(0)‖ = {self.displacement:.3g}); loss "
            f"{self.loss_initial:.4g} → {self.loss_final:.4g}",
        ]
        if self.reference is not None:
            lines.append(f"noise floor: known law {self.reference!r} drifts by "
                         f"{self.reference_floor:.2e} (relative)")
        width = max([len("law")] + [len(n) for n in self.laws])
        lines.append(f"  {'law':<{width}}  {'max |Δh|':>10}  {'max rel':>10}  {'error est':>10}  "
                     f"{'floor':>9}  verdict")
        for name, d in self.laws.items():
            err = "—" if d.error is None else f"{np.max(d.error):.2e}"
            lines.append(f"  {name:<{width}}  {d.max_absolute:10.2e}  {d.max_relative:10.2e}  "
                         f"{err:>10}  {d.floor:9.1e}  {d.verdict}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "moved": self.moved,
            "displacement": self.displacement,
            "loss_initial": self.loss_initial,
            "loss_final": self.loss_final,
            "reference": self.reference,
            "reference_floor": self.reference_floor,
            "laws": {k: v.to_json() for k, v in self.laws.items()},
        }


def _relative(values: np.ndarray, scale_given: float | None, theta_scale: float
              ) -> tuple[np.ndarray, np.ndarray, float, str]:
    v = _flat(values)
    absolute = np.max(np.abs(v - v[0]), axis=1) if v.shape[1] else np.zeros(v.shape[0])
    if scale_given is not None:
        scale, kind = float(scale_given), "given"
    else:
        h0 = float(np.max(np.abs(v[0]))) if v.shape[1] else 0.0
        sq = theta_scale**2
        if h0 > ZERO_LAW * max(sq, 1e-300):
            scale, kind = h0, "|h(0)|"
        else:
            scale, kind = sq, "‖θ(0)‖²"
    if not scale > 0:
        raise InputError("cannot scale the drift: h(0) = 0 and θ(0) = 0; pass scales={...}")
    return absolute, absolute / scale, scale, kind


@float64
def drift_report(result: Any, reference: str | None = None, *, factor: float = 10.0,
                 moved_threshold: float = 1e-3, scales: Mapping[str, float] | None = None,
                 laws: Sequence[str] | None = None) -> DriftReport:
    """Drift of each monitored law of ``result`` (a `SimResult` or `TrainResult`).

    Args:
        reference: name of a monitored law known to be conserved by the flow: its drift is the
            noise floor of the others (and it is reported too).
        factor: a law is conserved when its max relative drift ≤ factor × floor, the floor being
            this law's own relative error estimate if the run has one, else the reference's max
            relative drift (at least 1e-12).
        moved_threshold: minimum max ‖θ(t) − θ(0)‖/‖θ(0)‖ for the trajectory to count as moved.
        scales: name → denominator for the relative drift (default: |h(0)|, or ‖θ(0)‖² if h(0) ≈ 0).
        laws: the monitors to report (default: all).
    """
    values: Mapping[str, np.ndarray] = result.values
    names = list(values) if laws is None else list(laws)
    for n in names + ([reference] if reference is not None else []):
        if n not in values:
            raise InputError(f"no monitor named {n!r}; recorded: {', '.join(values) or 'none'}")
    scales = dict(scales or {})
    theta_scale = float(result.scale)
    times = np.asarray(result.times, dtype=float)
    ref_floor = None
    if reference is not None:
        _, rel, _, _ = _relative(values[reference], scales.get(reference), theta_scale)
        ref_floor = float(np.max(rel))
    distance = np.asarray(result.distance, dtype=float)
    displacement = float(np.max(distance) / theta_scale) if theta_scale > 0 else float(
        np.max(distance))
    moved = displacement >= moved_threshold
    out: dict[str, LawDrift] = {}
    errors = getattr(result, "error", None) or {}
    for name in names:
        absolute, relative, scale, kind = _relative(values[name], scales.get(name), theta_scale)
        err = None
        floor = MIN_FLOOR
        if name in errors:  # the law's own error estimate is the most specific floor
            e = _flat(errors[name])
            err = np.max(np.abs(e), axis=1) if e.shape[1] else np.zeros(e.shape[0])
            floor = max(floor, float(np.max(err)) / scale)
        elif ref_floor is not None and name != reference:
            floor = max(floor, ref_floor)
        conserved = bool(np.max(relative) <= factor * floor)
        if name == reference and err is None:
            verdict = "reference"  # it *is* the floor; nothing else to judge it against
            conserved = True
        else:
            verdict = ("conserved" if conserved else "drifts") if moved else "not moved"
        out[name] = LawDrift(name, times, absolute, relative, scale, kind, err, floor, conserved,
                             verdict)
    loss = np.asarray(result.loss, dtype=float)
    return DriftReport(flow=str(getattr(result, "flow", "")), laws=out, reference=reference,
                       reference_floor=ref_floor, moved=moved, displacement=displacement,
                       loss_initial=float(loss[0]), loss_final=float(loss[-1]), times=times,
                       loss=loss)


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope p of log y = p log x + c (points with x, y ≤ 0 are left out; at least
    two are needed)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        raise InputError("a log-log slope needs at least two positive points")
    lx, ly = np.log(x[keep]), np.log(y[keep])
    return float(np.polyfit(lx, ly, 1)[0])
