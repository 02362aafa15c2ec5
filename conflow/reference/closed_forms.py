"""Closed-form conservation laws of the literature for momentum and mirror flows, and the "known"
counts they give (MATH.md §3.3, §3.4, §4.2, §4.4).

These are **comparison values only** (tests, `conflow reproduce`): `count_laws` never sees them.

Momentum laws live on the flow's state z = (s, θ, v) ∈ R^{2D+1}, in the layout of
`conflow.flows.MomentumFlow`: z[0] = s (s = e^{τt} for τ > 0, s = t for τ = 0 and Nesterov), then θ
(the model's flat parameters), then v = θ' (same layout as θ).

Noether form (MATH.md §3.3). If K is an antisymmetric D×D matrix with ⟨∇φ_i(θ), Kθ⟩ = 0 for all i
(a linear isometric symmetry of φ), then along θ'' + τ(t)θ' = −∇E,

    d/dt ⟨θ', Kθ⟩ = ⟨−τθ' − ∇E, Kθ⟩ + ⟨θ', Kθ'⟩ = −τ ⟨θ', Kθ⟩,

so h_K = e^{∫τ} ⟨θ', Kθ⟩ is conserved: time factor 1 (τ = 0), s = e^{τt} (constant τ > 0),
s³ = t³ (Nesterov, τ = 3/t).

Deep linear nets φ = U_1⋯U_q, U_i ∈ R^{n_{i−1}×n_i}. The rotation R = exp(εA), A ∈ so(n_i), acting
by U_i → U_i R, U_{i+1} → Rᵀ U_{i+1} leaves φ unchanged; its generator is
Kθ = (…, U_i A, −A U_{i+1}, …), so with V_i = U_i' (velocity blocks)

    ⟨θ', Kθ⟩ = tr(V_iᵀ U_i A) − tr(V_{i+1}ᵀ A U_{i+1}) = tr((V_iᵀ U_i − U_{i+1} V_{i+1}ᵀ) A).

For A = E_kl − E_lk this is M_lk − M_kl with M = V_iᵀU_i − U_{i+1}V_{i+1}ᵀ. Up to an overall
sign the laws are therefore the entries k < l of

    factor · Antisym(U_iᵀ V_i + U_{i+1} V_{i+1}ᵀ),   Antisym(X) = X − Xᵀ

(note the **plus**: Antisym(U_{i+1}V_{i+1}ᵀ) = −Antisym(V_{i+1}U_{i+1}ᵀ); for a 2-layer net
U_1 = U, U_2 = Vᵀ this is MATH.md §3.4's Antisym(UᵀU' + VᵀV')). `tests/test_momentum.py` checks
∇h ⊥ every generator of ``MomentumFlow(...).family(model)``, drift included.

Scalar factors. MATH.md §3.4 states the exception for 2-layer nets with n_0 = n_2 = 1:
φ = ⟨u, w⟩ = ¼(‖a‖² − ‖b‖²) with u = U_1[0, :], w = U_2[:, 0], a = u + w, b = u − w, so
O(r) × O(r) acts separately on a and b, giving the extra laws factor·(a_i a_j' − a_j a_i') and
factor·(b_i b_j' − b_j b_i'), i < j. The same holds **inside a deep net** at every hidden layer i
with n_{i−1} = n_{i+1} = 1 (derived here, not in MATH.md): then U_iU_{i+1} = ⟨u, w⟩ is a 1×1 block,
φ = (U_1⋯U_{i−1}) ⟨u, w⟩ (U_{i+2}⋯U_q) depends on (U_i, U_{i+1}) only through ⟨u, w⟩, and rotating a
alone (or b alone) is a linear isometry of θ (the map (u, w) ↦ (a, b)/√2 is orthogonal) that fixes
φ — a Noether symmetry of the form above. MATH.md §3.4's deep-net formula (one rotation per
hidden layer) misses these laws: e.g. [1,2,1,2] has 2 momentum laws, not 1, and [1,1,3,1] has 6,
not 3 (both certified by the exact and numeric engines).

The known momentum count of a linear net is the rank of the Jacobian of these laws at a generic
state (as `known_count` does for gradient flows); it shows the saturation
2pr − p(2p+1) of wide layers (r > 2p) by itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from conflow.errors import InputError
from conflow.flows import AbstractFlow, SignFlow, parse_flow
from conflow.flows import decay as weight_decay
from conflow.models.attention import attention_heads
from conflow.models.base import Model, split_flat
from conflow.precision import float64
from conflow.reference.gradient_laws import gradient_laws, homogeneous_laws
from conflow.training.monitors import decay_integral

Array = jax.Array

# A tiny one-off program: XLA's optimisation passes would cost ~5× its compile time for nothing.
_FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
    "xla_cpu_parallel_codegen_split_count": 1,
}

#: Families whose closed-form gradient laws are those of the entropy (mirror) metric.
ENTROPY_FAMILIES = ("nmf", "icnn")

#: Families whose momentum flows have no conservation law at all (MATH.md §3.4).
NO_MOMENTUM_LAWS = ("relu", "nmf", "icnn", "product")


def _is_momentum(flow: AbstractFlow) -> bool:
    return flow is not None and flow.has_velocity


def time_factor(s: Array, flow: AbstractFlow) -> Array:
    """e^{∫τ} expressed in the time variable s: 1 (τ = 0), s (τ > 0), s³ (Nesterov)."""
    tau = flow.tau
    if tau is None:
        return s**3
    return jnp.ones_like(s) if tau == 0.0 else s


#: Families with closed-form (Noether) momentum laws: the deep linear nets (MATH.md §3.3).
LINEAR_NET_FAMILIES = ("linear", "factorization")


def has_momentum_laws(model: Model) -> bool:
    """Whether `linear_momentum_laws` applies (a deep linear net or a factorisation)."""
    return model.name in LINEAR_NET_FAMILIES


def _layers(model: Model, theta: Array) -> list[Array]:
    """The matrices U_1, …, U_q of φ = U_1⋯U_q for ``linear`` and ``factorization`` (U, Vᵀ)."""
    mats = split_flat(theta, model.blocks)
    if model.name == "linear":
        return mats
    if model.name == "factorization":
        u, v = mats
        return [u, v.T]
    raise InputError(f"no closed-form linear-net momentum laws for model {model.label}")


def _strict_upper(m: Array) -> Array:
    rows, cols = np.triu_indices(m.shape[0], k=1)
    return m[rows, cols]


def linear_momentum_laws(
    z: Array, model: Model, flow: AbstractFlow, deep_scalar_factors: bool = True
) -> Array:
    """The closed-form momentum laws of a (deep) linear net at a state z = (s, θ, v), shape (K,).

    For each hidden layer i: the strictly upper entries of
    factor·Antisym(U_iᵀV_i + U_{i+1}V_{i+1}ᵀ); if n_{i−1} = n_{i+1} = 1 (a scalar factor
    U_iU_{i+1} = ⟨u, w⟩, see the module docstring) also factor·(a_j a_k' − a_k a_j') and
    factor·(b_j b_k' − b_k b_j'), a = u + w, b = u − w. ``deep_scalar_factors=False`` keeps the
    scalar-factor laws only for 2-layer nets: exactly MATH.md §3.4's list (one rotation per hidden
    layer for deep nets), which misses the others.
    """
    D = model.D
    s, theta, vel = z[0], z[1 : D + 1], z[D + 1 :]
    f = time_factor(s, flow)
    us, vs = _layers(model, theta), _layers(model, vel)
    parts = []
    for i in range(len(us) - 1):
        m = us[i].T @ vs[i] + us[i + 1] @ vs[i + 1].T  # (n_i, n_i)
        parts.append(f * _strict_upper(m - m.T))
        scalar = us[i].shape[0] == 1 and us[i + 1].shape[1] == 1
        if scalar and (deep_scalar_factors or len(us) == 2):
            u, w = us[i][0, :], us[i + 1][:, 0]
            du, dw = vs[i][0, :], vs[i + 1][:, 0]
            for x, dx in ((u + w, du + dw), (u - w, du - dw)):
                parts.append(f * _strict_upper(jnp.outer(x, dx) - jnp.outer(dx, x)))
    if not parts:
        return jnp.zeros((0,), dtype=z.dtype)
    return jnp.concatenate(parts)


def nmf_scalar_gradient_laws(theta: Array, model: Model) -> Array:
    """Extra entropy-GF laws of scalar NMF (n1 = n3 = 1, φ = Σ_k u_k v_k), shape (r − 1,).

    Along u_k' = v_k' = −c u_k v_k the difference c_k = u_k − v_k is conserved (`nmf_laws`), and
    du_k / (u_k v_k) is the same for every k; integrating, ψ_k = log(u_k / v_k) / (u_k − v_k)
    changes at the same rate for all k, so ψ_k − ψ_1 (k = 2..r) are laws. Together with the r
    linear laws: 2r − 1 = D − 1 (MATH.md §4.2's exception).
    """
    u, v = split_flat(theta, model.blocks)
    u, v = u[0, :], v[:, 0]
    psi = jnp.log(u / v) / (u - v)
    return psi[1:] - psi[0]


def decayed_laws(z: Array, laws: Callable[[Array], Array], flow: AbstractFlow) -> Array:
    """H(e^{Λ(t)}θ) at a state z = (s, θ) of a gradient flow with weight decay (MATH.md §2.10):
    s = e^{λt} for a constant λ (so e^{Λ} = s), s = t for a function λ(t) (Λ by quadrature,
    `conflow.training.monitors.decay_integral`).

    P3 Thm 2.1: every law under weight decay has this form with H a law without it. Conversely
    [derived], if H is a law and homogeneous (H(cθ) = c^k H(θ)), then along θ' = −λθ − ∇L,
    d/dt H(e^Λθ) = e^Λ⟨∇H(e^Λθ), θ' + λθ⟩ = −e^{kΛ}⟨∇H(θ), ∇L(θ)⟩ = 0. ``laws`` should therefore
    be `homogeneous_laws` (Example 4.8's third law is not homogeneous and is not kept: its count
    drops from 3 to 2 under weight decay, blind, with both engines)."""
    s, theta = z[0], z[1:]
    lam = flow.weight_decay
    factor = s if weight_decay.is_constant(lam) else jnp.exp(decay_integral(lam, s))
    return laws(factor * theta)


def _uv_sign_laws(u: Array, v: Array) -> list[Array]:
    """Sign-flow laws of φ = UVᵀ, U ∈ R^{n×r}, V ∈ R^{m×r} [derived; MATH.md §2.11 / P3 App. R
    state none except n = m = r = 1].

    Under θ' = −sign(∂φᵀc), coordinate θ_j moves by −sign(⟨g_j, c⟩), g_j = ∂φ/∂θ_j. When
    g_a = α g_b with α ≠ 0 of locally constant sign, sign(g-scale)·θ moves alike, so
    sign(α_a)θ_a − sign(α_b)θ_b is a law (locally). For UVᵀ, g_{U_ik} = e_i v_kᵀ and
    g_{V_jk} = u_k e_jᵀ are parallel only when m = 1 (U_i1..U_ir share the line e_i, scales v_k)
    or n = 1 (V_j1..V_jr share e_j, scales u_k); n = m = 1 puts all 2r coordinates on one line:

    - n = m = 1: sign(v_k)u_k − sign(v_1)u_1 (k ≥ 2), sign(u_k)v_k − sign(v_1)u_1: 2r − 1 laws
      (r = 1: sign(u)v − sign(v)u = ±(|v| − |u|), P3's |U| − |V|);
    - m = 1 < n: sign(v_k)U_ik − sign(v_1)U_i1, k ≥ 2: n(r − 1) laws;
    - n = 1 < m: sign(u_k)V_jk − sign(u_1)V_j1, k ≥ 2: m(r − 1) laws;
    - n, m ≥ 2: none.
    """
    n, m = u.shape[0], v.shape[0]
    if n == 1 and m == 1:
        su, sv = jnp.sign(u[0]), jnp.sign(v[0])
        ref = sv[0] * u[0, 0]
        return [sv[1:] * u[0, 1:] - ref, su * v[0] - ref]
    if m == 1:
        sv = jnp.sign(v[0])
        return [(sv[1:] * u[:, 1:] - sv[0] * u[:, :1]).ravel()]
    if n == 1:
        su = jnp.sign(u[0])
        return [(su[1:] * v[:, 1:] - su[0] * v[:, :1]).ravel()]
    return []


def sign_flow_laws(theta: Array, model: Model) -> Array:
    """The sign-flow laws of ``factorization`` (U, V), 2-matrix ``linear`` (U = U_1, V = U_2ᵀ)
    and ``attention`` (per head, the factors (Qᵀ, Kᵀ) and (Vᵀ, Oᵀ)): `_uv_sign_laws`."""
    if model.name == "attention":
        q, k, v, o = attention_heads(theta, model.blocks)
        parts = [p for h in range(q.shape[0])
                 for p in _uv_sign_laws(q[h].T, k[h].T) + _uv_sign_laws(v[h].T, o[h].T)]
    else:
        a, b = split_flat(theta, model.blocks)
        parts = _uv_sign_laws(a, b if model.name == "factorization" else b.T)
    return jnp.concatenate(parts) if parts else jnp.zeros((0,), dtype=theta.dtype)


def closed_form_laws(model: Model, flow: AbstractFlow | str | None = None,
                     ) -> Callable[[Array], Array] | None:
    """The closed-form laws of ``model`` under ``flow`` as a function of the flow's state, or
    ``None`` when none are recorded for that combination.

    - gradient flow, Euclidean: `gradient_laws` (for the Euclidean families);
    - gradient flow, entropy metric: NMF Σ_i U_ik − Σ_j V_kj (plus `nmf_scalar_gradient_laws` when
      n1 = n3 = 1), ICNN Σ_i U_ik − ½(‖v_k‖² + b_k²) (MATH.md §4.2, §4.4);
    - momentum / Nesterov: `linear_momentum_laws` for ``linear`` and ``factorization``; no law
      (an empty vector) for ReLU, NMF, ICNN and the product (MATH.md §3.4);
    - Euclidean gradient flow with weight decay, on z = (s, θ): `decayed_laws` of the
      homogeneous closed forms (MATH.md §2.10);
    - sign flow: `sign_flow_laws` for ``factorization``, 2-matrix ``linear`` and ``attention``
      (MATH.md §2.11, derived).
    """
    flow = None if flow is None else parse_flow(flow)
    if isinstance(flow, SignFlow):
        families = ("factorization", "attention") + (("linear",) if len(model.dims) == 3 else ())
        if model.name not in families:
            return None
        return functools.partial(sign_flow_laws, model=model)
    if flow is not None and flow.has_time and not flow.has_velocity:  # weight decay
        laws = homogeneous_laws(model)
        if laws is None or flow.metric_name != "euclidean" or model.name in ENTROPY_FAMILIES:
            return None
        return functools.partial(decayed_laws, laws=laws, flow=flow)
    lam = getattr(flow, "weight_decay", None)  # None: a flow without the option
    if _is_momentum(flow) and lam is not None and weight_decay.is_decayed(lam):
        return None  # momentum with weight decay: no closed form recorded
    if not _is_momentum(flow):
        metric = "euclidean" if flow is None else flow.metric_name
        laws = gradient_laws(model)
        entropy_family = model.name in ENTROPY_FAMILIES
        if laws is None or (metric == "entropy") != entropy_family:
            return None
        if model.name == "nmf" and model.dims[0] == model.dims[2] == 1:
            extra = functools.partial(nmf_scalar_gradient_laws, model=model)
            return lambda theta: jnp.concatenate([laws(theta), extra(theta)])
        return laws
    if _is_momentum(flow):
        if model.name in ("linear", "factorization"):
            if flow.metric_name != "euclidean":
                return None
            return functools.partial(linear_momentum_laws, model=model, flow=flow)
        if model.name in NO_MOMENTUM_LAWS:
            return lambda z: jnp.zeros((0,), dtype=z.dtype)
    return None


@float64
def known_count(
    model: Model, flow: AbstractFlow | str | None = None, key: Array | None = None, *,
    deep_scalar_factors: bool = True
) -> int | None:
    """Number of independent closed-form laws: the rank of their Jacobian at a generic state of
    ``flow`` (relative cut 1e-9). ``None`` when no closed form is
    recorded for the combination. ``deep_scalar_factors=False`` leaves out the scalar-factor
    momentum laws of deep linear nets (MATH.md §3.4's own list). A comparison value only;
    `count_laws` never uses it."""
    flow = None if flow is None else parse_flow(flow)
    laws = closed_form_laws(model, flow)
    if laws is None:
        return None
    if not deep_scalar_factors and _is_momentum(flow) and model.name in ("linear",
                                                                          "factorization"):
        laws = functools.partial(linear_momentum_laws, model=model, flow=flow,
                                 deep_scalar_factors=False)
    return _jacobian_rank(laws, model, flow, key)


def _jacobian_rank(laws, model: Model, flow: AbstractFlow, key: Array | None) -> int:
    key = jax.random.PRNGKey(12345) if key is None else key
    if flow is None:
        z = model.sample_points(key, 1)[0]
    else:
        z = flow.sample_points(model, key, 1)[0]
    if jax.eval_shape(laws, z).shape[0] == 0:
        return 0
    jac = np.asarray(jax.jit(jax.jacfwd(laws), compiler_options=_FAST_COMPILE)(z))
    if jac.size == 0:
        return 0
    s = np.linalg.svd(jac, compute_uv=False)
    return int(np.sum(s > s[0] * 1e-9)) if s[0] > 0 else 0


def model_laws(model: Model, flow: AbstractFlow | str | None = None) -> Callable:
    """The model's closed-form laws under ``flow`` as a monitor on parameter pytrees (for
    `conflow.simulate` / `conflow.train`).

    Gradient flows: ``h(params)`` (Euclidean or entropy metric). Momentum flows on linear /
    factorisation models: ``h(params, velocity, t)`` = e^{τt}·Antisym(…) (t³ for Nesterov, 1 for
    τ = 0). Raises `InputError` when none is recorded.
    """
    flow = parse_flow(flow, default_tau=1.0)
    laws = closed_form_laws(model, flow)
    if laws is None:
        raise InputError(f"no closed-form laws recorded for {model.label} under {flow.label}")
    if not flow.has_velocity:
        def gradient_law(params):
            return laws(model.flatten(params))
        return gradient_law

    def momentum_law(params, velocity, t):
        s = flow.time_variable(t)
        return laws(jnp.concatenate([s[None], model.flatten(params), model.flatten(velocity)]))

    return momentum_law
