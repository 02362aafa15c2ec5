"""`verify_law`: test a hypothesised conservation law h, structurally and (optionally) empirically.

Structural test (MATH.md §1.2, §3.2, §7): h is a law iff ⟨∇h(z), χ_j(z)⟩ = 0 for every generator
χ_j of the flow — the drift χ_0 included for momentum flows and weight decay (MATH.md §2.10) — at
every state z. At ``points``
generic states, with ∇h by autodiff, each (point, generator) pair gives the relative residual

    r = |⟨∇h, χ_j⟩| / Σ_k |∂_k h · χ_{j,k}|,

i.e. the inner product measured against the size of the terms that cancel in it (a true law sits at
rounding level, ~1e-16·(number of terms), the *noise floor*). Verdict on the largest r:

- ``conserved`` if r ≤ 1e-9 everywhere (also when ∇h vanishes at every point: a constant h);
- ``not_conserved`` if r ≥ 1e-6 somewhere; the worst generator and state are reported;
- ``inconclusive`` in between, or when h is not finite at most points.

Independence and completeness (MATH.md §1.2, §1.5): given laws already known, h is independent of
them if appending ∇h raises the rank of their gradients at random points; a set of laws is
complete when that rank equals `count_laws`.

Empirical check (``empirical=True``, MATH.md §7 (ii)): the flow is integrated with a fixed-step RK4
(this module's own; `conflow.training.simulate` is not used) for random "data" — a random linear read-out
A of φ(θ) with a square loss against random targets and a cross-entropy loss against random labels
(any loss of φ gives a flow in the family, MATH.md §1.3) — from random initial states, at two step
sizes (n and 2n steps over the same time T, chosen from the initial speed so that the trajectory
moves by ~30 %). Reported per run: the relative drift of h, max_t |h(z_t) − h(z_0)| /
(‖∇h(z_0)‖·max_t ‖z_t − z_0‖), at both step sizes; the same for a reference law (a known law of the
model, if any); the integrator's own error ‖z_T(n) − z_T(2n)‖ / ‖z_T − z_0‖; and whether the state
moved. A true law's drift is at the integrator's error and falls ~16× when the step halves; a false
law's drift is O(1) and does not fall.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conflow.errors import InputError, check_int
from conflow.flows import AbstractFlow, parse_flow
from conflow.laws.count import count_laws
from conflow.laws.expressions import LawExpression, compile_law
from conflow.laws.find import Law, LawBasis, generator_evaluator, gradient_cut
from conflow.models.base import Model, check_model
from conflow.precision import float64
from conflow.status import Conservation

Array = jax.Array

CONSERVED, NOT_CONSERVED, INCONCLUSIVE = (Conservation.CONSERVED, Conservation.NOT_CONSERVED,
                                          Conservation.INCONCLUSIVE)
TOL_CONSERVED = 1e-9
TOL_BROKEN = 1e-6
EPS = float(np.finfo(np.float64).eps)
LOSSES = ("square", "cross_entropy")


# ------------------------------------------------------------------------------ h as a function



def state_function(model: Model, flow: AbstractFlow, h: Any, state: bool = False) -> Callable:
    """h as a scalar function of the flow's state z (θ, (s, θ) with weight decay, or (s, θ, v) for
    momentum flows).

    ``h`` may be a law expression (str, see `conflow.laws.expressions`), a `Law`, a `LawExpression`,
    or a JAX callable written on the model's own parameters (`Model.to_pytree`: the dict of
    named blocks of a built-in model, the params pytree of `conflow.custom`, the Equinox / NNX
    module of `conflow.from_model`): h(params) for gradient flows, h(t, params) for gradient flows
    with weight decay, h(t, params, velocity) for momentum flows (t the time: t = log(s)/τ or
    log(s)/λ when s = e^{τt} or e^{λt}, t = s otherwise, `AbstractFlow.time_of`; velocity has the
    structure of params); or h(z) on the flat state with ``state=True``.
    """
    if isinstance(h, str):
        return compile_law(h, model, flow)
    if isinstance(h, (Law, LawExpression)):
        return h.fn if isinstance(h, Law) else h
    if not callable(h):
        raise InputError(f"h must be a callable, a Law or an expression string, got "
                         f"{type(h).__name__}")
    if state:
        fn = h
    elif not flow.has_time:
        def fn(z):
            return h(model.to_pytree(z))
    else:
        def fn(z):
            s, theta, v = flow.split_state(model, z)
            args = (flow.time_of(s), model.to_pytree(theta))
            return h(*args) if v is None else h(*args, model.to_pytree(v))

    def scalar(z):
        out = jnp.asarray(fn(z))
        if out.size != 1:
            raise InputError(f"h must return a scalar, got shape {tuple(out.shape)}")
        return jnp.reshape(out, ())

    return scalar


def generator_names(model: Model, flow: AbstractFlow) -> list[str]:
    """A readable name for every generator, in the order of ``flow.family(model)``
    (`AbstractFlow.generator_names`)."""
    return flow.generator_names(model)


# ------------------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class EmpiricalRun:
    loss: str
    init: int
    T: float
    steps: tuple[int, int]
    moved: float  # ‖z_T − z_0‖ / ‖z_0‖
    integrator_error: float
    drift: tuple[float, float]  # relative drift of h at n and 2n steps
    reference_drift: tuple[float, float] | None
    verdict: Conservation

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EmpiricalReport:
    """The simulation check: one `EmpiricalRun` per (loss, initialisation)."""

    verdict: Conservation
    reason: str
    runs: tuple[EmpiricalRun, ...]
    reference: str | None
    integrator: str = "fixed-step RK4 (conflow.laws.verify)"

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "reference": self.reference,
                "integrator": self.integrator, "runs": [r.to_json() for r in self.runs]}

    def summary(self) -> str:
        lines = [f"  empirical ({self.integrator}): {self.verdict.upper().replace('_', ' ')}"
                 + (f" — {self.reason}" if self.reason else "")]
        if self.reference:
            lines.append(f"    reference law: {self.reference}")
        for r in self.runs:
            ref = ("" if r.reference_drift is None else
                   f", reference {r.reference_drift[0]:.1e} → {r.reference_drift[1]:.1e}")
            lines.append(
                f"    {r.loss:13s} init {r.init}: T={r.T:.3g}, {r.steps[0]}→{r.steps[1]} steps, "
                f"moved {r.moved:.0%}, integrator error {r.integrator_error:.1e}; "
                f"drift of h {r.drift[0]:.1e} → {r.drift[1]:.1e}{ref}: {r.verdict}")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Result of `verify_law`.

    Attributes:
        verdict: ``conserved``, ``not_conserved`` or ``inconclusive`` (structural test);
            ``reason`` explains it in one line.
        max_residual: the largest relative residual |⟨∇h, χ_j⟩| / Σ_k|∂_k h χ_{j,k}|.
        noise_floor: rounding level of that ratio (ε × state dim).
        generator, generator_name, point: the worst (generator index, its name, state) — the
            ones that break h when not conserved.
        n_breaking: how many (point, generator) pairs exceed the ``not conserved`` threshold.
        independent: h is functionally independent of ``known`` laws (``None`` without them);
            ``rank_known`` / ``rank_with_h`` the gradient ranks, ``n_count`` the `count_laws`
            result and ``complete`` whether the known laws (plus h, if it is an independent law)
            reach the count.
        empirical: the `EmpiricalReport` (``None`` unless requested).
    """

    verdict: Conservation
    reason: str
    max_residual: float
    noise_floor: float
    points: int
    state_dim: int
    generator: int | None
    generator_name: str | None
    point: np.ndarray | None = dataclasses.field(repr=False)
    point_index: int | None
    n_breaking: int
    independent: bool | None
    rank_known: int | None
    rank_with_h: int | None
    n_count: int | None
    complete: bool | None
    empirical: EmpiricalReport | None
    seconds: float
    expression: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "law": self.expression, "verdict": self.verdict, "reason": self.reason,
            "max_residual": self.max_residual, "noise_floor": self.noise_floor,
            "thresholds": {"conserved": TOL_CONSERVED, "not_conserved": TOL_BROKEN},
            "points": self.points, "state_dim": self.state_dim,
            "generator": self.generator, "generator_name": self.generator_name,
            "point": None if self.point is None else [float(x) for x in self.point],
            "point_index": self.point_index, "n_breaking": self.n_breaking,
            "independent": self.independent, "rank_known": self.rank_known,
            "rank_with_h": self.rank_with_h, "count": self.n_count, "complete": self.complete,
            "empirical": None if self.empirical is None else self.empirical.to_json(),
            "seconds": self.seconds,
        }

    def summary(self, names: Sequence[str] | None = None) -> str:
        head = f"{self.verdict.upper().replace('_', ' ')}: {self.reason}"
        lines = [(f"{self.expression}\n" if self.expression else "") + head,
                 f"  largest relative residual {self.max_residual:.1e} over {self.points} points "
                 f"(noise floor {self.noise_floor:.1e}; conserved ≤ {TOL_CONSERVED:.0e}, "
                 f"broken ≥ {TOL_BROKEN:.0e})"]
        if self.verdict == NOT_CONSERVED and self.point is not None:
            if names is not None and len(names) <= 24:
                pt = ", ".join(f"{nm}={x:.3g}" for nm, x in zip(names, self.point))
            else:
                pt = f"state #{self.point_index} (see --json for its coordinates)"
            lines.append(f"  broken by {self.generator_name} at {pt}; "
                         f"{self.n_breaking} (point, generator) pairs break it")
        if self.independent is not None:
            lines.append(f"  independent of the {self.rank_known} known independent laws: "
                         f"{'yes' if self.independent else 'no'} (rank {self.rank_known} → "
                         f"{self.rank_with_h})")
        if self.n_count is not None and self.complete is None:
            lines.append(f"  count_laws: {self.n_count}")
        elif self.n_count is not None:
            lines.append(f"  count_laws: {self.n_count}; the known laws"
                         f"{' plus h' if self.independent and self.verdict == CONSERVED else ''}"
                         f" are {'complete' if self.complete else 'not complete'}")
        if self.empirical is not None:
            lines.append(self.empirical.summary())
        return "\n".join(lines)


# --------------------------------------------------------------------------- structural check


def _structural(model, flow, h_state, points: int, seed: int):
    n, m, gens = generator_evaluator(model, flow)
    Z = np.asarray(flow.sample_points(model, np.random.default_rng([seed, 31337]), points))
    X = []
    for i in range(0, points, 8):
        chunk = Z[i : i + 8]
        pad = 8 - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        X.append(np.asarray(gens(jnp.asarray(chunk)))[: 8 - pad])
    X = np.concatenate(X)
    grad = np.asarray(jax.jit(jax.vmap(jax.grad(h_state)))(jnp.asarray(Z)))
    terms = grad[:, None, :] * X  # (P, m, n)
    res = np.abs(terms.sum(axis=2))
    size = np.abs(terms).sum(axis=2)
    finite = np.isfinite(res) & np.isfinite(size)
    rel = np.where(finite & (size > 0), res / np.where(size > 0, size, 1.0), 0.0)
    rel = np.where(finite, rel, np.nan)
    return Z, rel, size, finite


@float64
def verify_law(
    model: Model,
    flow: AbstractFlow | str | None = None,
    h: Any = None,
    *,
    state: bool = False,
    known: Any = None,
    count: Any = None,
    points: int = 32,
    seed: int = 0,
    empirical: bool = False,
    losses: Sequence[str] = LOSSES,
    inits: int = 2,
    steps: int = 100,
    reference: Any = "auto",
) -> Verdict:
    """Test whether ``h`` is a conservation law of ``model`` under ``flow`` (module docstring).

    Args:
        h: an expression string, a `Law`, or a JAX function — h(θ) for gradient flows,
            h(t, θ) for gradient flows with weight decay, h(t, θ, v) for momentum flows, or h(z)
            of the state with ``state=True``.
        known: laws already found — a `LawBasis`, or a sequence of `Law`s / expression strings /
            state functions — for the independence and completeness report.
        count: a `LawCount`, ``True`` to run `count_laws`, or ``None`` (default: run it only when
            ``known`` is given).
        points: generic states for the structural test.
        empirical: also integrate the flow (``losses``, ``inits`` random initialisations, ``steps``
            and 2 × ``steps`` RK4 steps).
        reference: the law whose drift is shown next to h's in the simulation: ``"auto"`` (the
            first known law, if any), ``None``, or like ``h`` (e.g. a closed form of
            `conflow.reference`).
    """
    t0 = time.perf_counter()
    check_model(model)
    flow = parse_flow(flow)
    seed = check_int("seed", seed, 0)
    if h is None:
        raise InputError("verify_law needs a law h")
    if points < 1:
        raise InputError(f"points must be >= 1, got {points}")
    flow.validate(model)
    n = flow.state_dim(model)
    h_state = state_function(model, flow, h, state)
    _check_scalar(h_state, model, flow)
    names = generator_names(model, flow)

    Z, rel, size, finite = _structural(model, flow, h_state, points, seed)
    floor = EPS * n
    ok_points = finite.all(axis=1)
    gen = pt = None
    n_breaking = int(np.sum(np.nan_to_num(rel, nan=0.0) >= TOL_BROKEN))
    if ok_points.sum() < max(1, points // 2):
        verdict, reason, worst = INCONCLUSIVE, (
            f"h or its gradient is not finite at {points - int(ok_points.sum())} of {points} "
            f"points"), float("nan")
    else:
        r = np.where(ok_points[:, None], rel, 0.0)
        worst = float(r.max())
        pt, gen = (int(i) for i in np.unravel_index(int(np.argmax(r)), r.shape))
        if not np.any(size[ok_points] > 0):
            verdict, reason = CONSERVED, "∇h vanishes at every sampled point (h is constant)"
        elif worst <= TOL_CONSERVED:
            verdict = CONSERVED
            reason = (f"⟨∇h, χ⟩ = 0 to rounding for all {len(names)} generators"
                      + (" (drift included)" if flow.has_time else ""))
        elif worst >= TOL_BROKEN:
            verdict = NOT_CONSERVED
            reason = f"⟨∇h, {names[gen]}⟩ ≠ 0 (relative residual {worst:.1e})"
        else:
            verdict = INCONCLUSIVE
            reason = (f"largest relative residual {worst:.1e} is between the thresholds "
                      f"{TOL_CONSERVED:.0e} and {TOL_BROKEN:.0e}")

    independent = rank_known = rank_with = n_count = complete = None
    known_fns = _known_functions(model, flow, known)
    if count is None and known is not None:
        count = True
    law_count = None
    if count is True:
        law_count = count_laws(model, flow, seed=seed)
    elif count not in (None, False):
        law_count = count
    if law_count is not None:
        n_count = law_count.n_laws
    if known_fns is not None:
        rank_known = gradient_rank(model, flow, known_fns, seed=seed)
        rank_with = gradient_rank(model, flow, known_fns + [h_state], seed=seed)
        independent = rank_with > rank_known
        if n_count is not None:
            final = rank_with if (independent and verdict == CONSERVED) else rank_known
            complete = final == n_count

    emp = None
    if empirical:
        ref = _reference(model, flow, known_fns, reference)
        emp = simulate_drift(model, flow, h_state, reference=ref[0], reference_name=ref[1],
                             losses=losses, inits=inits, steps=steps, seed=seed)
    text = h if isinstance(h, str) else (h.expression if isinstance(h, Law) else None)
    return Verdict(
        verdict=verdict, reason=reason, max_residual=worst, noise_floor=floor, points=points,
        state_dim=n, generator=gen if verdict == NOT_CONSERVED else None,
        generator_name=names[gen] if verdict == NOT_CONSERVED else None,
        point=Z[pt] if verdict == NOT_CONSERVED else None,
        point_index=pt if verdict == NOT_CONSERVED else None, n_breaking=n_breaking,
        independent=independent, rank_known=rank_known, rank_with_h=rank_with, n_count=n_count,
        complete=complete, empirical=emp, seconds=time.perf_counter() - t0,
        expression=None if text is None else text.strip(),
    )


def _check_scalar(h_state, model, flow) -> None:
    z = flow.sample_points(model, 11, 1)[0]
    try:
        out = jax.eval_shape(h_state, z)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001  (user code: report, one line)
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"cannot evaluate h on a state of shape {tuple(z.shape)}: {msg}") from None
    if out.shape != ():
        raise InputError(f"h must return a scalar, got shape {out.shape}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise InputError(f"h must return a real (floating-point) scalar, got {out.dtype} (a "
                         "constant int or a comparison has no gradient to test)")


def _known_functions(model, flow, known) -> list[Callable] | None:
    if known is None:
        return None
    if isinstance(known, LawBasis):
        known = list(known.laws)
    if callable(known) and not isinstance(known, (Law, LawExpression)):
        return [known]  # a state function returning a vector of laws
    out = []
    for k in known:
        if isinstance(k, str):
            out.append(compile_law(k, model, flow))
        elif isinstance(k, Law):
            out.append(k.fn)
        elif callable(k):
            out.append(k)
        else:
            raise InputError(f"known laws must be Laws, expressions or state functions, got "
                             f"{type(k).__name__}")
    return out


def gradient_rank(model: Model, flow: AbstractFlow, fns: Sequence[Callable], *, points: int = 3,
                  seed: int = 0) -> int:
    """Number of functionally independent laws among ``fns`` (state functions, each returning a
    scalar or a vector): the rank of their stacked gradients, the largest over random points."""
    if not fns:
        return 0
    flow = parse_flow(flow)

    def stacked(z):
        return jnp.concatenate([jnp.ravel(f(z)) for f in fns])

    jac = jax.jit(jax.jacfwd(stacked))
    Z = np.asarray(flow.sample_points(model, np.random.default_rng([seed, 271828]), points))
    ranks = []
    for z in Z:
        G = np.asarray(jac(jnp.asarray(z)))
        if G.size == 0:
            return 0
        G = G[np.isfinite(G).all(axis=1)]
        ranks.append(gradient_cut(G).rank if G.size else 0)
    return max(ranks)


@dataclasses.dataclass(frozen=True)
class Completeness:
    n_independent: int
    n_count: int | None
    complete: bool | None


@float64
def check_complete(model: Model, flow: AbstractFlow, laws: Any, *, count: Any = True,
                   seed: int = 0) -> Completeness:
    """Whether ``laws`` (as ``known`` of `verify_law`) are complete: their number of independent
    members equals `count_laws` (MATH.md §1.5)."""
    flow = parse_flow(flow)
    fns = _known_functions(model, flow, laws) or []
    r = gradient_rank(model, flow, fns, seed=seed)
    if count is True:
        count = count_laws(model, flow, seed=seed)
    n = None if count in (None, False) else count.n_laws
    return Completeness(r, n, None if n is None else r == n)


# ------------------------------------------------------------------------------- simulation


def _reference(model, flow, known_fns, reference) -> tuple[Callable | None, str | None]:
    if reference is None:
        return None, None
    if reference != "auto":
        fn = state_function(model, flow, reference)
        return fn, reference if isinstance(reference, str) else "given reference"
    if known_fns:
        f = known_fns[0]
        return (lambda z: jnp.ravel(f(z))[0]), "first known law"
    return None, None


N_SQUARE, N_BATCH, N_CLASSES = 16, 8, 3


def _make_integrator(model: Model, flow: AbstractFlow):
    """rhs(z, data) of the flow for the loss mix in ``data``, and a jitted RK4 trajectory."""
    field, phi = flow.vector_field(model), model.phi

    def rhs(z, data):
        A, y, onehot, w_sq, w_ce, scale = data
        theta = flow.split_state(model, z)[1]

        def loss(p):
            out = A @ p
            sq = 0.5 * jnp.mean((out[:N_SQUARE] - y) ** 2)
            logits = out[N_SQUARE:].reshape(N_BATCH, N_CLASSES)
            ce = jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.sum(logits * onehot, axis=1))
            return scale * (w_sq * sq + w_ce * ce)

        return field(z, jax.grad(loss)(phi(theta)))

    def rk4(z, data, dt):
        k1 = rhs(z, data)
        k2 = rhs(z + 0.5 * dt * k1, data)
        k3 = rhs(z + 0.5 * dt * k2, data)
        k4 = rhs(z + dt * k3, data)
        return z + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)

    @functools.partial(jax.jit, static_argnums=4)
    def trajectory(z0, data, dt, substeps, nsave):
        """``nsave`` snapshots, each after ``substeps`` RK4 steps of size dt (one compilation
        for every step size)."""
        def save(z, _):
            z1 = jax.lax.fori_loop(0, substeps, lambda i, y: rk4(y, data, dt), z)
            return z1, z1

        _, traj = jax.lax.scan(save, z0, None, length=nsave)
        return jnp.concatenate([z0[None], traj])

    return jax.jit(rhs), trajectory


def _relative_drift(hvals: np.ndarray, grad0: np.ndarray, traj: np.ndarray) -> float:
    change = np.max(np.abs(hvals - hvals[0]))
    moved = np.max(np.linalg.norm(traj - traj[0], axis=1))
    scale = np.linalg.norm(grad0) * moved
    if not np.isfinite(change):
        return float("inf")
    return float(change / scale) if scale > 0 else float(change)


@float64
def simulate_drift(
    model: Model,
    flow: AbstractFlow,
    h_state: Callable,
    *,
    reference: Callable | None = None,
    reference_name: str | None = None,
    losses: Sequence[str] = LOSSES,
    inits: int = 2,
    steps: int = 100,
    seed: int = 0,
) -> EmpiricalReport:
    """Integrate the flow and compare the drift of ``h_state`` with the integrator's error (see
    the module docstring)."""
    bad = [l for l in losses if l not in LOSSES]
    if bad:
        raise InputError(f"unknown loss {bad[0]!r}; known: {', '.join(LOSSES)}")
    if inits < 1 or steps < 4:
        raise InputError("need inits >= 1 and steps >= 4")
    flow = parse_flow(flow)
    rhs, trajectory = _make_integrator(model, flow)
    h_vals = jax.jit(jax.vmap(h_state))
    h_grad = jax.jit(jax.grad(h_state))
    r_vals = None if reference is None else jax.jit(jax.vmap(reference))
    r_grad = None if reference is None else jax.jit(jax.grad(reference))
    d = model.d
    rng = np.random.default_rng([seed, 4242])
    runs = []
    for loss in losses:
        for i in range(inits):
            A = rng.standard_normal((N_SQUARE + N_BATCH * N_CLASSES, d)) / np.sqrt(d)
            y = rng.standard_normal(N_SQUARE)
            onehot = np.eye(N_CLASSES)[rng.integers(0, N_CLASSES, N_BATCH)]
            w = (1.0, 0.0) if loss == "square" else (0.0, 1.0)
            z0 = np.asarray(flow.sample_points(model, rng, 1)[0])
            data = (jnp.asarray(A), jnp.asarray(y), jnp.asarray(onehot), w[0], w[1], 1.0)
            speed = float(np.linalg.norm(np.asarray(rhs(jnp.asarray(z0), data))))
            T = float(np.clip(0.3 * np.linalg.norm(z0) / max(speed, 1e-12), 1e-3, 3.0))
            trajs = []
            for sub in (1, 2):  # n steps, then 2n steps saved at the same times
                trajs.append(np.asarray(trajectory(jnp.asarray(z0), data, T / (sub * steps),
                                                   sub, steps)))
            coarse, fine = trajs
            if not (np.isfinite(coarse).all() and np.isfinite(fine).all()):
                runs.append(EmpiricalRun(loss, i, T, (steps, 2 * steps), float("nan"),
                                         float("nan"), (float("nan"),) * 2, None, INCONCLUSIVE))
                continue
            disp = np.linalg.norm(fine[-1] - z0)
            moved = float(disp / max(np.linalg.norm(z0), 1e-300))
            err = float(np.linalg.norm(coarse[-1] - fine[-1]) / max(disp, 1e-300))
            g0 = np.asarray(h_grad(jnp.asarray(z0)))
            drift = tuple(_relative_drift(np.asarray(h_vals(jnp.asarray(t))), g0, t)
                          for t in (coarse, fine))
            ref = None
            if r_vals is not None:
                rg = np.asarray(r_grad(jnp.asarray(z0)))
                ref = tuple(_relative_drift(np.asarray(r_vals(jnp.asarray(t))), rg, t)
                            for t in (coarse, fine))
            runs.append(EmpiricalRun(loss, i, T, (steps, 2 * steps), moved, err, drift, ref,
                                     _run_verdict(moved, err, drift)))
    verdicts = [r.verdict for r in runs]
    if NOT_CONSERVED in verdicts:
        k = verdicts.count(NOT_CONSERVED)
        verdict, reason = NOT_CONSERVED, (f"h drifts far above the integrator error and does not "
                                          f"fall with the step in {k}/{len(runs)} runs")
    elif verdicts and all(v == CONSERVED for v in verdicts):
        verdict, reason = CONSERVED, "h drifts only at the integrator's error in every run"
    else:
        verdict, reason = INCONCLUSIVE, f"run verdicts: {', '.join(verdicts)}"
    return EmpiricalReport(verdict, reason, tuple(runs), reference_name)


def _run_verdict(moved: float, err: float, drift: tuple[float, float]) -> str:
    floor = 1e-12
    coarse, fine = drift
    if not np.isfinite(moved) or moved < 1e-3:
        return INCONCLUSIVE
    if fine <= max(10 * err, floor) and (fine <= 0.5 * coarse or coarse <= 10 * floor):
        return CONSERVED
    if fine >= max(100 * err, 1e-8) and fine >= 0.5 * coarse:
        return NOT_CONSERVED
    return INCONCLUSIVE
