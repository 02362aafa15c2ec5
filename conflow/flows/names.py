"""The one place that turns flow names into flow objects (``--flow``, ``simulate("mirror")``)."""

from __future__ import annotations

from conflow.errors import InputError
from conflow.flows.base import AbstractFlow
from conflow.flows.gradient import GradientFlow
from conflow.flows.momentum import NESTEROV, MomentumFlow
from conflow.flows.sign import SignFlow

#: name -> (metric, damped?, Nesterov?)
_NAMED = {
    "gradient": ("euclidean", False, False),
    "mirror": ("entropy", False, False),
    "heavy-ball": ("euclidean", True, False),
    "momentum": ("euclidean", True, False),
    "nesterov": ("euclidean", False, True),
    "mirror-momentum": ("entropy", True, False),
    "mirror-nesterov": ("entropy", False, True),
}
#: sign descent θ' = −sign(∇L): no metric, no damping, no weight decay.
SIGN = "sign"
FLOW_NAMES = (*_NAMED, SIGN)


def parse_flow(flow: AbstractFlow | str | None = None, *, tau: float | None = None,
               metric: str | None = None, default_tau: float = 0.0,
               weight_decay: float | None = None) -> AbstractFlow:
    """A flow object from a flow object (returned as is) or a name in `FLOW_NAMES`.

    Args:
        flow: an `AbstractFlow`, a name, or None (Euclidean gradient flow).
        tau: the damping τ ≥ 0 of ``"heavy-ball"`` / ``"momentum"`` / ``"mirror-momentum"``;
            an error for the other names and for flow objects.
        metric: ``"euclidean"`` or ``"entropy"`` to override a name's metric (``--metric``).
        default_tau: τ of a damped name when ``tau`` is None (the CLI counts τ = 0; the
            integrators default to 1).
        weight_decay: a weight decay λ ≥ 0 for the gradient and momentum names
            (``--weight-decay``; `conflow.flows.decay`); an error for ``"sign"`` and for flow
            objects.
    """
    if isinstance(flow, AbstractFlow):
        if tau is not None:
            raise InputError("tau is given by the flow object itself")
        if metric is not None and metric != flow.metric:
            raise InputError("metric is given by the flow object itself")
        if weight_decay is not None:
            raise InputError("weight decay is given by the flow object itself")
        return flow
    flow = "gradient" if flow is None else flow
    if flow == SIGN:
        if tau is not None or weight_decay is not None:
            raise InputError("tau and weight decay do not apply to the sign flow")
        if metric not in (None, "euclidean"):
            raise InputError(f"the sign flow takes the sign of the Euclidean gradient; metric "
                             f"{metric!r} does not apply")
        return SignFlow()
    if not isinstance(flow, str) or flow not in _NAMED:
        raise InputError(f"unknown flow {flow!r}; known: {', '.join(FLOW_NAMES)} or a flow "
                         "object (GradientFlow, MomentumFlow, SignFlow)")
    named_metric, damped, nesterov = _NAMED[flow]
    if tau is not None and not damped:
        raise InputError(f"tau applies to heavy-ball / momentum flows, not {flow!r}")
    if metric is not None and named_metric == "entropy" and metric != "entropy":
        raise InputError(f"flow {flow!r} has the entropy metric; metric {metric!r} contradicts it")
    metric = named_metric if metric is None else metric
    wd = 0.0 if weight_decay is None else weight_decay
    if nesterov:
        return MomentumFlow(NESTEROV, metric, wd)
    if damped:
        return MomentumFlow(default_tau if tau is None else float(tau), metric, wd)
    return GradientFlow(metric, wd)
