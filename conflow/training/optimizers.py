"""Discrete optimizers with their continuous limits, and a `train` loop that monitors laws.

Every optimizer is an ``optax.GradientTransformation`` (plain optax where optax already has it), so
any optax optimizer (Adam, …) runs through the same loop.

Mapping to the continuous flows (MATH.md §3.1). Finite differences with step δ on
μθ'' + νθ' = −∇L give the heavy ball

    x_{k+1} = x_k − α ∇L(x_k) + β (x_k − x_{k−1}),   α = δ/(ν + μ/δ),  β = μ/(δν + μ),

and x_k ≈ θ(kδ). μ = 0 is gradient descent with learning rate δ/ν (time t = kη for GD with rate
η); μ = 1, ν = τ is the momentum flow θ'' + τθ' = −∇L of `conflow.training.simulate` (β = 1/(1 + δτ),
β^{−k} ≈ e^{τt}). `heavy_ball` is ``optax.sgd(α, momentum=β)``, which is exactly this recursion.

- `gd`: x_{k+1} = x_k − η∇L (SGD when `train` draws minibatches).
- `heavy_ball`, `heavy_ball_flow`: the recursion above, raw (α, β) or from (δ, μ, ν).
- `nesterov`: Nesterov's accelerated gradient with the Su–Boyd–Candès scaling: learning rate
  s = δ², momentum β_k = t_k/(t_k + 3δ), t_k = t0 + kδ (the heavy-ball β with ν = 3/t_k), gradient
  taken at the look-ahead point; its limit is θ'' + (3/t)θ' = −∇L. The iterate seen by the loop
  (and the monitors) is the look-ahead point y_k.
- `mirror_descent`: the explicit Euler step of the entropy mirror flow, x_{k+1} = x_k − η x_k ⊙ ∇L
  on positive coordinates (NMF's multiplicative update; keeps the NMF law Σ_i U_ik − Σ_j V_kj
  exactly, MATH.md §4.2), plain GD elsewhere.
- `mirror_heavy_ball`: the P2 notebooks' discretisation of μθ'' + νθ' = −(μθ' + νθ) ⊙ ∇L,
  x_{k+1} − x_k = β d_k − α (μ d_k/δ + ν x_k) ⊙ ∇L(x_k), d_k = x_k − x_{k−1}.
- `sign_descent`: x_{k+1} = x_k − η sign(∇L(x_k)) (``optax.sign_sgd``), the explicit Euler step of
  the sign flow θ' = −sign(∇L) (`conflow.flows.SignFlow`; Adam with β1 = β2 = 0, ε = 0).
- weight decay (`make_optimizer(..., weight_decay=λ)`, MATH.md §2.10): x_{k+1} = (1 − ηλ)x_k − η u_k
  with u_k the optimizer's step direction (``optax.add_decayed_weights``; AdamW is
  ``optax.adamw``), the Euler step of θ' + λθ = −u; a law H of the flow without decay is then
  carried, approximately, by H((1 − ηλ)^{−k} x_k) (`conflow.training.monitors.rescaled_law`).

`train` runs the steps inside ``lax.scan`` (one compiled call, or a few chunks with a progress
bar), draws minibatches, and evaluates the monitors every ``every`` steps only.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conflow.errors import InputError
from conflow.precision import float64
from conflow.training.monitors import as_monitors
from conflow.training.problem import PyTree, as_problem, check_data, tree_norm
from conflow.training.results import FlowState

# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------


def momentum_coefficients(delta: float, mu: float = 1.0, nu: float = 1.0) -> tuple[float, float]:
    """(α, β) of the heavy ball discretising μθ'' + νθ' = −∇L with step δ (MATH.md §3.1):
    α = δ/(ν + μ/δ), β = μ/(δν + μ)."""
    delta, mu, nu = float(delta), float(mu), float(nu)
    if not (delta > 0 and mu >= 0 and nu >= 0 and delta * nu + mu > 0):
        raise InputError(f"need δ > 0, μ ≥ 0, ν ≥ 0 and δν + μ > 0; got δ = {delta}, μ = {mu}, "
                         f"ν = {nu}")
    return delta / (nu + mu / delta), mu / (delta * nu + mu)


def _check_lr(lr: float, what: str = "learning rate") -> float:
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise InputError(f"the {what} must be finite and > 0, got {lr}")
    return lr


def gd(lr: float) -> optax.GradientTransformation:
    """Gradient descent x ← x − lr ∇L (= ``optax.sgd(lr)``)."""
    return optax.sgd(_check_lr(lr))


def heavy_ball(lr: float, beta: float) -> optax.GradientTransformation:
    """x_{k+1} = x_k − lr ∇L(x_k) + β (x_k − x_{k−1}) (= ``optax.sgd(lr, momentum=β)``: with
    m_{k+1} = g_k + β m_k and x_{k+1} = x_k − lr m_{k+1}, one has
    x_{k+1} − x_k = −lr g_k + β(x_k − x_{k−1}))."""
    beta = float(beta)
    if not (0 <= beta < 1):
        raise InputError(f"heavy-ball momentum β must be in [0, 1), got {beta}")
    return optax.sgd(_check_lr(lr), momentum=beta if beta > 0 else None)


def heavy_ball_flow(delta: float, mu: float = 1.0, nu: float = 1.0) -> optax.GradientTransformation:
    """The heavy ball for μθ'' + νθ' = −∇L with step δ (`momentum_coefficients`)."""
    alpha, beta = momentum_coefficients(delta, mu, nu)
    return heavy_ball(alpha, beta)


class NesterovState(NamedTuple):
    count: jax.Array
    x_prev: PyTree  # x_k (the non-look-ahead sequence)


def nesterov(delta: float, t0: float = 0.0) -> optax.GradientTransformation:
    """Nesterov's method for θ'' + (3/t)θ' = −∇L (Su, Boyd & Candès 2016), step δ:

        x_{k+1} = y_k − δ² ∇L(y_k),   y_{k+1} = x_{k+1} + β_{k+1} (x_{k+1} − x_k),
        β_k = t_k / (t_k + 3δ),  t_k = t0 + kδ,

    i.e. the heavy-ball β of `momentum_coefficients` with μ = 1, ν = 3/t_k. The parameters held by
    the loop are the look-ahead points y_k (gradients are taken there); x_0 = y_0.
    """
    delta = _check_lr(delta, "step δ")
    t0 = float(t0)
    if not (math.isfinite(t0) and t0 >= 0):
        raise InputError(f"t0 must be finite and >= 0, got {t0}")
    s = delta * delta

    def init(params):
        return NesterovState(jnp.zeros((), jnp.int64), jax.tree_util.tree_map(jnp.asarray, params))

    def update(grads, state, params=None):
        if params is None:
            raise InputError("nesterov needs the parameters in update(grads, state, params)")
        t_next = t0 + (state.count + 1) * delta
        beta = t_next / (t_next + 3.0 * delta)
        x_next = jax.tree_util.tree_map(lambda y, g: y - s * g, params, grads)
        y_next = jax.tree_util.tree_map(lambda xn, xp: xn + beta * (xn - xp), x_next,
                                        state.x_prev)
        updates = jax.tree_util.tree_map(jnp.subtract, y_next, params)
        return updates, NesterovState(state.count + 1, x_next)

    return optax.GradientTransformation(init, update)


def _mask_tree(positive: PyTree, params: PyTree) -> PyTree:
    if positive is None:
        return jax.tree_util.tree_map(lambda x: jnp.ones(jnp.shape(x), bool), params)
    try:
        return jax.tree_util.tree_map(
            lambda m, x: jnp.broadcast_to(jnp.asarray(m, bool), jnp.shape(x)), positive, params)
    except (ValueError, TypeError) as exc:
        raise InputError(f"positive must be a pytree of bools shaped like the parameters: "
                         f"{exc}") from None


def mirror_descent(lr: float, positive: PyTree = None) -> optax.GradientTransformation:
    """Explicit Euler step of the entropy mirror flow: x ← x − lr x ⊙ ∇L on the ``positive``
    leaves / entries (default: all), x ← x − lr ∇L elsewhere. Keeps linear laws such as NMF's
    Σ_i U_ik − Σ_j V_kj exactly; x stays positive while lr ∇L < 1."""
    lr = _check_lr(lr)

    def update(grads, state, params=None):
        if params is None:
            raise InputError("mirror_descent needs the parameters in update(grads, state, params)")
        mask = _mask_tree(positive, params)
        updates = jax.tree_util.tree_map(
            lambda m, x, g: jnp.where(m, -lr * x * g, -lr * g), mask, params, grads)
        return updates, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class MirrorHeavyBallState(NamedTuple):
    displacement: PyTree  # d_k = x_k − x_{k−1}


def mirror_heavy_ball(delta: float, mu: float = 1.0, nu: float = 1.0,
                      positive: PyTree = None) -> optax.GradientTransformation:
    """Finite differences (step δ) of μθ'' + νθ' = −(μθ' + νθ) ⊙ ∇L on the positive coordinates
    (MATH.md §3.1, P2 notebooks), the heavy ball elsewhere:

        x_{k+1} − x_k = β d_k − α (μ d_k / δ + ν x_k) ⊙ ∇L(x_k),   d_k = x_k − x_{k−1},

    α, β as in `momentum_coefficients`. μ = 0 is `mirror_descent` with rate δ."""
    alpha, beta = momentum_coefficients(delta, mu, nu)
    delta, mu, nu = float(delta), float(mu), float(nu)

    def init(params):
        return MirrorHeavyBallState(jax.tree_util.tree_map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        if params is None:
            raise InputError("mirror_heavy_ball needs the parameters in update(grads, state, "
                             "params)")
        mask = _mask_tree(positive, params)

        def leaf(m, x, d, g):
            mirror = beta * d - alpha * (mu * d / delta + nu * x) * g
            return jnp.where(m, mirror, beta * d - alpha * g)

        updates = jax.tree_util.tree_map(leaf, mask, params, state.displacement, grads)
        return updates, MirrorHeavyBallState(updates)

    return optax.GradientTransformation(init, update)


def sign_descent(lr: float) -> optax.GradientTransformation:
    """Sign descent x ← x − lr sign(∇L) (= ``optax.sign_sgd(lr)``): the Euler step of
    θ' = −sign(∇L), and Adam with β1 = β2 = 0 and ε = 0."""
    return optax.sign_sgd(_check_lr(lr))


def _check_weight_decay(weight_decay: float) -> float:
    lam = float(weight_decay)
    if not (math.isfinite(lam) and lam >= 0):
        raise InputError(f"weight decay λ must be finite and >= 0, got {lam}")
    return lam


def with_weight_decay(optimizer: optax.GradientTransformation, weight_decay: float, lr: float,
                      coupled: bool = False) -> optax.GradientTransformation:
    """Weight decay λ added to ``optimizer``. Decoupled (default, as AdamW): x ← x + u − lr·λ·x
    for the optimizer's update u, the Euler step of θ' + λθ = −(the optimizer's direction).
    ``coupled``: the gradient becomes ∇L + λx before the optimizer sees it (the L2 penalty
    λ/2‖x‖²; for the heavy ball, the discretisation of θ'' + τθ' + λθ = −∇L of
    `conflow.flows.MomentumFlow`). For `gd` both are x ← x − lr(∇L + λx)."""
    lam = _check_weight_decay(weight_decay)
    if lam == 0:
        return optimizer
    if coupled:
        return optax.chain(optax.add_decayed_weights(lam), optimizer)
    return optax.chain(optimizer, optax.add_decayed_weights(-lr * lam))


OPTIMIZERS = ("sgd", "heavy-ball", "nesterov", "adam", "adamw", "sign", "mirror")
#: Optimizers that take a ``weight_decay``.
DECAYED = ("sgd", "heavy-ball", "adamw", "sign")
#: AdamW's weight decay when none is given (optax's default).
ADAMW_DEFAULT_DECAY = 1e-4


def make_optimizer(name: str, lr: float, *, mu: float | None = None, nu: float = 1.0,
                   beta: float | None = None, positive: PyTree = None,
                   weight_decay: float | None = None,
                   ) -> tuple[optax.GradientTransformation, float, str]:
    """An optimizer by name (`OPTIMIZERS`), with the time one step stands for and a label.

    - ``sgd``: `gd` (lr); one step = lr time units of the gradient flow.
    - ``heavy-ball``: with ``beta``, raw `heavy_ball` (lr, β); otherwise `heavy_ball_flow` with
      δ = lr, μ (default 1) and ν; one step = δ.
    - ``nesterov``: `nesterov` with δ = lr; one step = δ.
    - ``adam``: ``optax.adam(lr)``; one step = lr (nominal).
    - ``adamw``: ``optax.adamw(lr, weight_decay=λ)`` (λ default `ADAMW_DEFAULT_DECAY`); one step
      = lr (nominal).
    - ``sign``: `sign_descent` (lr); one step = lr time units of the sign flow.
    - ``mirror``: `mirror_descent` (lr) if μ is None or 0, else `mirror_heavy_ball` (δ = lr, μ, ν).

    ``weight_decay`` λ (``sgd``, ``sign``: `with_weight_decay`, x ← x + u − lr·λ·x;
    ``heavy-ball``: coupled, ∇L + λx enters the momentum; ``adamw``: optax's own) is refused by
    the others (use ``adamw`` for Adam).
    """
    lr = _check_lr(lr)
    if weight_decay is not None:
        weight_decay = _check_weight_decay(weight_decay)
        if name not in DECAYED and name in OPTIMIZERS:
            raise InputError(f"weight decay applies to {', '.join(DECAYED)}, not {name}"
                             + (" (use adamw)" if name == "adam" else ""))
    decayed = weight_decay is not None and name != "adamw"
    tx, step_time, label = _named_optimizer(name, lr, mu, nu, beta, positive, weight_decay)
    if decayed and weight_decay:
        return (with_weight_decay(tx, weight_decay, lr, coupled=name == "heavy-ball"),
                step_time, f"{label}+wd(λ={weight_decay:g})")
    return tx, step_time, label


def _named_optimizer(name, lr, mu, nu, beta, positive, weight_decay):
    if name == "sgd":
        return gd(lr), lr, f"sgd(lr={lr:g})"
    if name == "heavy-ball":
        if beta is not None:
            if mu is not None:
                raise InputError("give either beta (raw heavy ball) or mu (flow mapping), not both")
            return heavy_ball(lr, beta), lr, f"heavy-ball(α={lr:g}, β={beta:g})"
        mu = 1.0 if mu is None else mu
        alpha, b = momentum_coefficients(lr, mu, nu)
        return heavy_ball(alpha, b), lr, (f"heavy-ball(δ={lr:g}, μ={mu:g}, ν={nu:g}: α={alpha:.4g},"
                                          f" β={b:.6g})")
    if beta is not None:
        raise InputError(f"beta applies to the heavy-ball optimizer only, not {name}")
    if name == "nesterov":
        return nesterov(lr), lr, f"nesterov(δ={lr:g})"
    if name == "adam":
        return optax.adam(lr), lr, f"adam(lr={lr:g})"
    if name == "adamw":
        lam = ADAMW_DEFAULT_DECAY if weight_decay is None else weight_decay
        return optax.adamw(lr, weight_decay=lam), lr, f"adamw(lr={lr:g}, λ={lam:g})"
    if name == "sign":
        return sign_descent(lr), lr, f"sign(lr={lr:g})"
    if name == "mirror":
        if not mu:
            return mirror_descent(lr, positive), lr, f"mirror(lr={lr:g})"
        return (mirror_heavy_ball(lr, mu, nu, positive), lr,
                f"mirror-heavy-ball(δ={lr:g}, μ={mu:g}, ν={nu:g})")
    raise InputError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        steps: the recorded step indices 0, every, 2·every, …, n_steps, shape (T,).
        times: ``t0 + steps · step_time`` (the flow time the steps stand for).
        values: monitor name → values at the recorded steps, (T, …).
        loss: the loss at the recorded steps: exact full-data loss at x_k for full-batch runs;
            for minibatch runs the full-data loss at step 0, then the mean minibatch loss over the
            ``every`` steps before each record.
        distance: ‖x_k − x_0‖.
        final: the last state (t = number of steps; velocity = x_n − x_{n−1} when a monitor used
            it, else None).
        opt_state: the optimizer state after the last step.
        scale: ‖x_0‖.
    """

    steps: np.ndarray
    times: np.ndarray
    values: dict[str, np.ndarray]
    loss: np.ndarray
    distance: np.ndarray
    final: FlowState
    opt_state: Any
    scale: float
    seconds: float
    optimizer: str = ""
    batch_size: int | None = None
    error: dict[str, np.ndarray] | None = None
    kind: str = "discrete"

    @property
    def flow(self) -> str:
        return self.optimizer

    def summary(self) -> str:
        names = ", ".join(self.values) or "(no monitor)"
        batch = "full batch" if self.batch_size is None else f"batch {self.batch_size}"
        return (f"{self.optimizer}: {int(self.steps[-1])} steps ({batch}), loss "
                f"{self.loss[0]:.4g} → {self.loss[-1]:.4g}, monitors: {names}, "
                f"{self.seconds:.2f} s")


def _leading_dim(data: Any) -> int:
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise InputError("minibatches need data with a leading sample axis")
    sizes = {int(jnp.shape(x)[0]) if jnp.ndim(x) else -1 for x in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise InputError(f"every data array needs the same leading (sample) dimension, got "
                         f"{sorted(sizes)}")
    return sizes.pop()


def batch_indices(key: jax.Array, step: jax.Array, n: int, batch_size: int) -> jax.Array:
    """The minibatch of step k: ``batch_size`` indices in [0, n), uniform with replacement, from
    ``fold_in(key, k)`` (the same for any chunking of the run)."""
    return jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, n)


class Trainer:
    """A compiled training loop (see `make_trainer`); call it as
    ``trainer(params0, data=None, steps=100, *, key=0, opt_state0=None, progress=False)``.

    The compiled scan is kept between calls (recompiled only for new shapes or a new number of
    records per chunk), so repeated runs — sweeps, benchmarks — pay compilation once.
    """

    def __init__(self, problem, optimizer, *, every, monitors, batch_size, step_time, t0, label):
        self.problem, self.optimizer = problem, optimizer
        self.every, self.monitors, self.batch_size = every, monitors, batch_size
        self.step_time, self.t0, self.label = step_time, t0, label
        self.need_state = any(m.needs_state for m in monitors)
        self._initial = jax.jit(self._initial_impl)
        self._run_blocks = jax.jit(self._run_blocks_impl, static_argnums=(5, 6))

    # -- the compiled pieces ----------------------------------------------------------------------
    def _batch(self, data, key, k, n):
        if self.batch_size is None:
            return data
        idx = batch_indices(key, k, n, self.batch_size)
        return jax.tree_util.tree_map(lambda a: a[idx], data)

    def _step(self, carry, k, data, key, n):
        p, s = carry
        value, g = jax.value_and_grad(self.problem.loss)(p, self._batch(data, key, k, n))
        updates, s = self.optimizer.update(g, s, p)
        return (optax.apply_updates(p, updates), s), value

    def _record(self, p, vel, k, block_loss, data, p0):
        vals = {m.name: m(p, vel, k.astype(jnp.float64)) for m in self.monitors}
        value = self.problem.loss(p, data) if self.batch_size is None else block_loss
        return vals, value, tree_norm(jax.tree_util.tree_map(jnp.subtract, p, p0))

    def _initial_impl(self, p, data):
        zero = jax.tree_util.tree_map(jnp.zeros_like, p) if self.need_state else None
        rec = self._record(p, zero, jnp.zeros((), jnp.int64), self.problem.loss(p, data), data, p)
        return rec, self.optimizer.init(p)

    def _run_blocks_impl(self, carry, first, data, p0, key, n_blocks, n):
        every = self.every

        def block(c, b):
            k0 = b * every
            (p, s), losses = jax.lax.scan(lambda cc, k: self._step(cc, k, data, key, n), c[:2],
                                          k0 + jnp.arange(every - 1))
            prev = p
            (p, s), last = self._step((p, s), k0 + every - 1, data, key, n)
            vel = jax.tree_util.tree_map(jnp.subtract, p, prev) if self.need_state else None
            block_loss = (jnp.sum(losses) + last) / every
            return (p, s, vel), self._record(p, vel, k0 + every, block_loss, data, p0)

        return jax.lax.scan(block, carry, first + jnp.arange(n_blocks))

    # -- a run ------------------------------------------------------------------------------------
    @float64
    def __call__(self, params0: PyTree, data: Any = None, steps: int = 100, *,
                 key: int | jax.Array = 0, opt_state0: Any = None,
                 progress: bool = False) -> TrainResult:
        start = time.perf_counter()
        prob, every, batch_size = self.problem, self.every, self.batch_size
        check_data(prob, data)
        steps = int(steps)
        if steps < 1:
            raise InputError(f"steps must be >= 1, got {steps}")
        if steps % every:
            raise InputError(f"steps ({steps}) must be a multiple of every ({every})")
        params = prob.params(params0)
        data = jax.tree_util.tree_map(jnp.asarray, data)
        n = 0
        if batch_size is not None:
            n = _leading_dim(data)
            if not 1 <= batch_size <= n:
                raise InputError(f"batch_size must be in [1, {n}], got {batch_size}")
        if isinstance(key, (int, np.integer)):
            key = jax.random.PRNGKey(int(key))
        rec0, opt_state = self._initial(params, data)
        if opt_state0 is not None:
            if (jax.tree_util.tree_structure(opt_state0)
                    != jax.tree_util.tree_structure(opt_state)):
                raise InputError("opt_state0 does not have the structure of "
                                 "optimizer.init(params0)")
            opt_state = opt_state0
        n_blocks = steps // every
        n_chunks = min(n_blocks, 50) if progress else 1
        sizes = [n_blocks // n_chunks + (1 if i < n_blocks % n_chunks else 0)
                 for i in range(n_chunks)]
        zero_vel = jax.tree_util.tree_map(jnp.zeros_like, params) if self.need_state else None
        carry, recs, first = (params, opt_state, zero_vel), [], 0
        bar = None
        if progress:
            import sys

            from tqdm import tqdm
            bar = tqdm(total=steps, file=sys.stderr, leave=False, desc="train")
        for size in sizes:
            carry, rec = self._run_blocks(carry, first, data, params, key, size, n)
            recs.append(rec)
            first += size
            if bar is not None:
                jax.block_until_ready(carry)
                bar.update(size * every)
        if bar is not None:
            bar.close()

        def cat(*parts):
            return np.concatenate([np.asarray(p) for p in parts], axis=0)

        vals0, loss0, dist0 = rec0
        values = {m.name: cat(np.asarray(vals0[m.name])[None], *(r[0][m.name] for r in recs))
                  for m in self.monitors}
        loss_hist = cat(np.asarray(loss0)[None], *(r[1] for r in recs))
        dist = cat(np.asarray(dist0)[None], *(r[2] for r in recs))
        ks = np.arange(0, steps + 1, every)
        final_params, final_state, last_vel = carry
        return TrainResult(
            steps=ks, times=self.t0 + ks * self.step_time, values=values, loss=loss_hist,
            distance=dist, final=FlowState(float(steps), final_params, last_vel),
            opt_state=final_state, scale=float(tree_norm(params)),
            seconds=time.perf_counter() - start, optimizer=self.label or "optimizer",
            batch_size=batch_size)


@float64
def make_trainer(problem: Any, optimizer: optax.GradientTransformation, *, every: int = 1,
                 monitors: Any = (), batch_size: int | None = None, step_time: float = 1.0,
                 t0: float = 0.0, loss: str | Callable = "square", activation: Any = None,
                 label: str = "") -> Trainer:
    """Set up a `Trainer` (compiled on first call); the arguments are those of `train`."""
    prob = as_problem(problem, loss=loss, activation=activation)
    every = int(every)
    if every < 1:
        raise InputError(f"every must be >= 1, got {every}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise InputError(f"optimizer must be an optax.GradientTransformation, got "
                         f"{type(optimizer).__name__}")
    if batch_size is not None:
        batch_size = int(batch_size)
        if prob.model is not None and not prob.model.takes_inputs:
            raise InputError("NMF trains on the whole matrix: batch_size must be None")
    return Trainer(prob, optimizer, every=every, monitors=as_monitors(monitors),
                   batch_size=batch_size, step_time=float(step_time), t0=float(t0), label=label)


@float64
def train(problem: Any, optimizer: optax.GradientTransformation, params0: PyTree,
          data: Any = None, steps: int = 100, *, every: int = 1, monitors: Any = (),
          batch_size: int | None = None, key: int | jax.Array = 0, step_time: float = 1.0,
          t0: float = 0.0, loss: str | Callable = "square", activation: Any = None,
          progress: bool = False, label: str = "", opt_state0: Any = None) -> TrainResult:
    """Run ``steps`` optimizer steps in ``lax.scan`` and record monitors every ``every`` steps.

    Args:
        problem: a conflow `Model` (with ``data`` and ``loss``) or a loss function of the
            parameter pytree (``loss(params)`` or ``loss(params, data)``).
        optimizer: any ``optax.GradientTransformation`` (see `make_optimizer`).
        params0: initial parameters (a model: dict of blocks or flat θ).
        data: passed to the loss; with ``batch_size`` every leaf's leading axis is the sample axis.
        steps: number of steps; must be a multiple of ``every``.
        monitors: ``h(params)`` or ``h(params, velocity, k)`` with velocity x_k − x_{k−1} and k the
            step index (as a float), evaluated at k = 0, every, 2·every, …, steps.
        batch_size: minibatch size (uniform with replacement, `batch_indices`); None: full batch.
        key: seed or PRNG key for the minibatches.
        step_time: the time of step k is t0 + k·step_time (`TrainResult.times`).
        t0: the time of step 0.
        progress: a tqdm bar (the run is then split into up to 50 compiled chunks).
        label: the optimizer's name in reports (`make_optimizer` returns one).
        opt_state0: the optimizer state to start from (default ``optimizer.init(params0)``), e.g.
            a heavy-ball trace m_0 = −(x_0 − x_{−1})/α for a nonzero initial velocity.

    Returns:
        A `TrainResult`. Use `make_trainer` to compile once and run several times.
    """
    trainer = make_trainer(problem, optimizer, every=every, monitors=monitors,
                           batch_size=batch_size, step_time=step_time, t0=t0, loss=loss,
                           activation=activation, label=label)
    return trainer(params0, data, steps, key=key, opt_state0=opt_state0, progress=progress)
