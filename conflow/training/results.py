"""What a run returns: `FlowState` (the end state of any run) and `SimResult` (a continuous run)."""

from __future__ import annotations

import dataclasses

import numpy as np

from conflow.training.problem import PyTree


@dataclasses.dataclass(frozen=True)
class FlowState:
    """The state at the end of a run: time (or step), parameters, velocity (None for gradient
    flows and plain optimizers)."""

    t: float
    params: PyTree
    velocity: PyTree | None = None


@dataclasses.dataclass
class SimResult:
    """What `simulate` returns.

    Attributes:
        times: save times, shape (T,).
        values: monitor name → values at the save times, shape (T, …).
        loss: the loss at the save times, (T,).
        distance: ‖θ(t) − θ(0)‖, (T,).
        final: the state at t1 (parameters, and velocity for momentum flows).
        scale: ‖θ(0)‖.
        error: monitor name → |values − values of a run at tolerances / ``error_factor``|, an
            estimate of the integrator's error on each law (``estimate_error=True``), else None.
        stats: diffrax step counts: num_steps, num_accepted_steps, num_rejected_steps.
        flow: the flow's label (`AbstractFlow.label`); solver, rtol, atol; seconds (wall,
            compile included).
        notes: warnings (e.g. the error-estimate rerun failed).
    """

    times: np.ndarray
    values: dict[str, np.ndarray]
    loss: np.ndarray
    distance: np.ndarray
    final: FlowState
    scale: float
    error: dict[str, np.ndarray] | None
    stats: dict[str, int]
    flow: str
    solver: str
    rtol: float
    atol: float
    seconds: float
    kind: str = "continuous"
    notes: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        names = ", ".join(self.values) or "(no monitor)"
        return (f"{self.flow}: t = {self.times[0]:g} → {self.times[-1]:g}, "
                f"{self.stats.get('num_accepted_steps', 0)} steps ({self.solver}, rtol "
                f"{self.rtol:g}, atol {self.atol:g}), loss {self.loss[0]:.4g} → "
                f"{self.loss[-1]:.4g}, monitors: {names}, {self.seconds:.2f} s")

