"""Continuous training flows, integrated with diffrax, recording conservation laws on the fly.

One entry point, `simulate` (or `make_simulator` to compile once and call many times), integrates
one of the flows of MATH.md §1.1, §3.1 and §4.1 on a **parameter pytree**:

====================  ==========================================  ==================================
flow                  ODE                                         state integrated by diffrax
====================  ==========================================  ==================================
``"gradient"``        θ' = −∇L(θ)                                 θ
``"mirror"``          θ' = −θ ⊙ ∇L(θ) on positive leaves          ξ = log θ on positive leaves
                      (entropy metric, MATH.md §4.1)              (θ = e^ξ stays > 0), θ elsewhere
``GradientFlow(f)``   θ' = −f(θ, ∇L(θ)), f a callable on pytrees  θ
``"heavy-ball"``      θ'' + τθ' = −∇L(θ), constant τ ≥ 0          (θ, v = θ')
``"nesterov"``        θ'' + (3/t)θ' = −∇L(θ), from t0 > 0         (θ, v)
``"mirror-momentum"`` θ'' + τθ' = −(τθ + θ') ⊙ ∇L(θ) on positive  (log θ, log w), w = θ' + τθ > 0
                      leaves (MATH.md §3.1), heavy ball elsewhere (d/dt log w = −∇L, θ' = w − τθ)
``"mirror-nesterov"`` the same with τ = 3/t                       (log θ, log w)
weight decay λ(t)     θ' + λθ = −M⁻¹∇L, θ'' + τθ' + λθ = −M⁻¹∇L  as without decay (mirror: the
                      (``weight_decay=``, MATH.md §2.10)          log coordinates gain −λ, −λθ/w)
``"sign"``            θ' = −sign(∇L) (`SignFlow`)                 θ (a discontinuous field: the
                                                                  steps shrink at sign switches)
====================  ==========================================  ==================================

The convention is conflow's (`conflow.flows`): **τ multiplies θ'**, so momentum laws carry e^{τt}
(t³ for Nesterov). Mirror Nesterov starts with w(t0) = θ'(t0) + 3θ(t0)/t0, which is large for a
small t0 (θ then grows like 3θ(t0)·t/t0 until the gradient term shrinks w): start it at t0 ≈ 1.
`conflow.flows.GradientFlow` and `conflow.flows.MomentumFlow` objects are accepted as flows too
(``MomentumFlow(τ, "entropy")`` is mirror momentum).

The problem — a loss function of the parameter pytree, or a conflow `Model` with data and a loss
name — is a `conflow.training.problem.Problem`; the monitors (the laws) follow the conventions of
`conflow.training.monitors` and are recorded at the save times through
``diffrax.SaveAt(ts=..., fn=...)`` — the trajectory itself is never stored. The loss and
‖θ(t) − θ(0)‖ are always recorded too, so a drift report (`conflow.training.drift`) can check that
the trajectory moved.

Steps are adaptive (Tsit5 by default, or Dopri5 / Dopri8, with a PID controller on rtol, atol),
float64, ``max_steps`` raised to 10⁶ by default; the whole solve is one ``jax.jit``-compiled call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from conflow.errors import InputError
from conflow.flows import AbstractFlow, FlowDynamics, parse_flow
from conflow.precision import float64
from conflow.training.monitors import as_monitors
from conflow.training.problem import (
    Problem,
    as_problem,
    check_data,
    to_float,
    tree_norm,
)
from conflow.training.results import FlowState, SimResult

Array = jax.Array
PyTree = Any

# ---------------------------------------------------------------------------------------------
# The continuous-flow simulator
# ---------------------------------------------------------------------------------------------


SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
}


def _solver(solver: str | diffrax.AbstractSolver) -> tuple[diffrax.AbstractSolver, str]:
    if isinstance(solver, diffrax.AbstractSolver):
        return solver, type(solver).__name__.lower()
    if solver not in SOLVERS:
        raise InputError(f"unknown solver {solver!r}; known: {', '.join(SOLVERS)}")
    return SOLVERS[solver](), solver


class Simulator:
    """A compiled continuous-flow run; see `make_simulator`. Call it as
    ``sim(theta0, data=None, velocity0=None, *, rtol=None, atol=None)``."""

    def __init__(self, problem: Problem, flow, *, monitors, t0, t1, ts, solver, rtol, atol,
                 dt0, max_steps, progress, estimate_error, error_factor):
        self.problem, self.flow = problem, flow
        self.monitors = monitors
        self.t0, self.t1, self.ts = t0, t1, ts
        self.solver, self.solver_name = _solver(solver)
        self.rtol, self.atol, self.dt0 = rtol, atol, dt0
        self.max_steps, self.progress = max_steps, progress
        self.estimate_error, self.error_factor = estimate_error, error_factor
        self._run = self._build()

    def _build(self):
        monitors, need_state = self.monitors, any(m.needs_state for m in self.monitors)
        problem, flow = self.problem, self.flow
        grad = jax.grad(problem.loss)

        def dynamics(mask) -> FlowDynamics:
            return flow.dynamics(grad, mask)

        def record(t, y, args):
            data, theta0, mask = args
            dyn = dynamics(mask)
            params = dyn.params(y)
            vel = dyn.velocity(t, y, data) if need_state else None
            out = {m.name: m(params, vel, t) for m in monitors}
            diff = jax.tree_util.tree_map(jnp.subtract, params, theta0)
            return out, problem.loss(params, data), tree_norm(diff)

        def final(t, y, args):
            data, _, mask = args
            dyn = dynamics(mask)
            return dyn.params(y), (dyn.velocity(t, y, data) if flow.has_velocity else None)

        def field(t, y, args):
            data, _, mask = args
            return dynamics(mask)(t, y, data)

        term = diffrax.ODETerm(field)
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=self.ts, fn=record),
                                      diffrax.SubSaveAt(t1=True, fn=final)])
        meter = diffrax.TqdmProgressMeter() if self.progress else diffrax.NoProgressMeter()

        def run(params0, velocity0, data, mask, rtol, atol):
            y0 = dynamics(mask).to_state(params0, velocity0, self.t0)
            sol = diffrax.diffeqsolve(
                term, self.solver, self.t0, self.t1, self.dt0, y0, args=(data, params0, mask),
                saveat=saveat,
                stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                max_steps=self.max_steps, progress_meter=meter, throw=False)
            recorded, (pf, vf) = sol.ys
            pf, vf = jax.tree_util.tree_map(lambda a: a[0], (pf, vf))  # t1 is saved once
            stats = {k: sol.stats[k] for k in ("num_steps", "num_accepted_steps",
                                                "num_rejected_steps")}
            return recorded, pf, vf, stats, sol.result == diffrax.RESULTS.successful

        return jax.jit(run)

    def _check_initial(self, params, velocity, mask):
        leaves = jax.tree_util.tree_leaves(params)
        if not all(bool(jnp.all(jnp.isfinite(x))) for x in leaves):
            raise InputError("θ0 has non-finite entries")
        self.flow.check_initial(params, velocity, mask, self.t0)

    @float64
    def __call__(self, theta0: PyTree, data: Any = None, velocity0: PyTree = None, *,
                 rtol: float | None = None, atol: float | None = None) -> SimResult:
        start = time.perf_counter()
        check_data(self.problem, data)
        params = self.problem.params(theta0)
        if velocity0 is None:
            velocity = jax.tree_util.tree_map(jnp.zeros_like, params)
        else:
            if not self.flow.has_velocity:
                raise InputError("velocity0 applies to momentum flows only")
            velocity = (self.problem.params(velocity0) if self.problem.model is not None
                        else to_float(velocity0))
            if jax.tree_util.tree_structure(velocity) != jax.tree_util.tree_structure(params):
                raise InputError("velocity0 must have the structure of θ0")
        mask = self.problem.mask(params)
        self._check_initial(params, velocity, mask)
        run = self._run
        rtol = self.rtol if rtol is None else rtol
        atol = self.atol if atol is None else atol
        data = jax.tree_util.tree_map(jnp.asarray, data)
        recorded, pf, vf, stats, ok = run(params, velocity, data, mask, rtol, atol)
        if not bool(ok):
            if self.flow.locally_constant:
                raise InputError(f"the solver stopped before t1 = {self.t1}: the sign flow's "
                                 "field is discontinuous and the adaptive steps stall where an "
                                 "entry of ∇L is held at 0 (a sliding mode); integrate a shorter "
                                 "horizon, or run sign descent: train(..., sign_descent(lr))")
            raise InputError(f"the solver stopped before t1 = {self.t1} (max_steps = "
                             f"{self.max_steps} reached, or a non-finite state); raise max_steps "
                             "or check the step size / data scale")
        values, loss, dist = recorded
        values = {m.name: values[m.name] for m in self.monitors}  # jit sorts dict keys
        error, notes = None, []
        if self.estimate_error:
            fine, _, _, _, fine_ok = run(params, velocity, data, mask,
                                                  rtol / self.error_factor,
                                                  atol / self.error_factor)
            if bool(fine_ok):
                error = {k: np.abs(np.asarray(values[k]) - np.asarray(fine[0][k]))
                         for k in values}
            else:
                notes.append(f"no error estimate: the rerun at rtol {rtol / self.error_factor:g} "
                             f"did not reach t1 within {self.max_steps} steps (a non-smooth field,"
                             " e.g. ReLU kinks, makes tight tolerances expensive)")
        return SimResult(
            times=np.asarray(self.ts), values={k: np.asarray(v) for k, v in values.items()},
            loss=np.asarray(loss), distance=np.asarray(dist),
            final=FlowState(self.t1, pf, vf), scale=float(tree_norm(params)),
            error=error, stats={k: int(v) for k, v in stats.items()}, flow=self.flow.label,
            solver=self.solver_name, rtol=float(rtol), atol=float(atol),
            seconds=time.perf_counter() - start, notes=notes)


@float64
def make_simulator(problem: Any, flow: AbstractFlow | str = "gradient", *, t1: float = 1.0,
                   t0: float | None = None, saveat: int | Sequence[float] | Array = 101,
                   monitors: Any = (), loss: str | Callable = "square",
                   activation: str | Callable | None = None, positive: PyTree = None,
                   tau: float | None = None, solver: str | diffrax.AbstractSolver = "tsit5",
                   rtol: float = 1e-8, atol: float = 1e-10, dt0: float | None = None,
                   max_steps: int = 1_000_000, progress: bool = False,
                   estimate_error: bool = False, error_factor: float = 10.0,
                   weight_decay: float | Callable | None = None) -> Simulator:
    """Set up (and compile on first call) a continuous-flow run; see `simulate` for arguments."""
    prob = as_problem(problem, loss=loss, activation=activation, positive=positive)
    flow = parse_flow(flow, tau=tau, default_tau=1.0, weight_decay=weight_decay)
    if prob.model is not None:
        flow.validate(prob.model)
    flow.dynamics(jax.grad(prob.loss), None)  # a flow that cannot integrate says so now
    t0 = flow.default_t0() if t0 is None else t0
    t0, t1 = float(t0), float(t1)
    if not (np.isfinite(t0) and np.isfinite(t1)) or t1 <= t0:
        raise InputError(f"need finite t0 < t1, got t0 = {t0}, t1 = {t1}")
    if flow.has_velocity and flow.tau is None and t0 <= 0:
        raise InputError(f"Nesterov's τ(t) = 3/t needs t0 > 0, got t0 = {t0}")
    if isinstance(saveat, (int, np.integer)) and not isinstance(saveat, bool):
        if saveat < 2:
            raise InputError(f"saveat must be >= 2 points or an array of times, got {saveat}")
        ts = jnp.linspace(t0, t1, int(saveat))
    else:
        ts = jnp.asarray(saveat, jnp.float64)
        if ts.ndim != 1 or ts.size < 1 or bool(jnp.any(jnp.diff(ts) < 0)) or float(ts[0]) < t0 \
                or float(ts[-1]) > t1:
            raise InputError("saveat times must be a non-decreasing 1-D array inside [t0, t1]")
    if not (rtol > 0 and atol > 0):
        raise InputError(f"rtol and atol must be > 0, got {rtol}, {atol}")
    if max_steps < 1:
        raise InputError(f"max_steps must be >= 1, got {max_steps}")
    return Simulator(prob, flow, monitors=as_monitors(monitors), t0=t0, t1=t1, ts=ts,
                     solver=solver, rtol=float(rtol), atol=float(atol), dt0=dt0,
                     max_steps=int(max_steps), progress=progress,
                     estimate_error=estimate_error, error_factor=float(error_factor))


@float64
def simulate(problem: Any, flow: AbstractFlow, theta0: PyTree, data: Any = None, t1: float = 1.0, *,
             saveat: int | Sequence[float] | Array = 101, monitors: Any = (),
             velocity0: PyTree = None, t0: float | None = None, tau: float | None = None,
             loss: str | Callable = "square", activation: str | Callable | None = None,
             positive: PyTree = None, solver: str | diffrax.AbstractSolver = "tsit5",
             rtol: float = 1e-8, atol: float = 1e-10, dt0: float | None = None,
             max_steps: int = 1_000_000, progress: bool = False, estimate_error: bool = False,
             error_factor: float = 10.0, weight_decay: float | Callable | None = None,
             ) -> SimResult:
    """Integrate a training flow from θ0 over [t0, t1] and record monitors at the save times.

    Args:
        problem: a loss function of the parameter pytree (``loss(params)`` if ``data`` is None,
            else ``loss(params, data)``), or a conflow `Model` (with ``data`` and ``loss``).
        flow: a name in `conflow.flows.FLOW_NAMES` or a flow object (`GradientFlow`,
            `MomentumFlow`, `SignFlow`).
        theta0: the initial parameter pytree (for a `Model`: a dict of blocks or flat θ).
        data: the data passed to the loss (a model: ``(x, y)``, or the matrix X for NMF).
        t1: end time. ``t0`` defaults to 0 (1e-3 for Nesterov, which needs t0 > 0).
        saveat: number of equispaced save times in [t0, t1], or the times themselves.
        monitors: laws to record (see `as_monitors`): ``h(params)`` or ``h(params, v, t)``.
        velocity0: θ'(t0) for momentum flows (default 0).
        tau: damping for the named momentum flows (default 1).
        loss: the loss name or callable, for a `Model` (see `make_loss`).
        activation: the activation, for a `Model` (see `make_loss`).
        positive: which leaves / entries are mirror coordinates (default: a model's positive
            blocks; every leaf for a loss function).
        solver: ``"tsit5"`` (default), ``"dopri5"``, ``"dopri8"`` or a diffrax solver.
        rtol: relative tolerance of the PID step-size controller.
        atol: absolute tolerance of the PID step-size controller.
        dt0: first step (None: automatic).
        max_steps: solver step budget; exceeding it raises `InputError`.
        progress: a tqdm progress bar (diffrax's TqdmProgressMeter).
        estimate_error: rerun at rtol, atol / ``error_factor`` and report the difference of
            every monitor as the integrator's error estimate (`SimResult.error`).
        error_factor: how much tighter the rerun of ``estimate_error`` is.
        weight_decay: λ ≥ 0 (or a function of t) for a named gradient or momentum flow:
            θ' + λθ = −∇L, θ'' + τθ' + λθ = −∇L (a flow object carries its own). Monitor the
            laws in their conserved form with `conflow.training.monitors.rescaled_law`.

    Returns:
        A `SimResult`.
    """
    sim = make_simulator(problem, flow, t1=t1, t0=t0, saveat=saveat, monitors=monitors,
                         loss=loss, activation=activation, positive=positive, tau=tau,
                         solver=solver, rtol=rtol, atol=atol, dt0=dt0, max_steps=max_steps,
                         progress=progress, estimate_error=estimate_error,
                         error_factor=error_factor, weight_decay=weight_decay)
    return sim(theta0, data, velocity0)
