"""Training flows: one `AbstractFlow` interface, consumed by the numeric and exact engines, law
discovery and verification, and the integrators.

- `GradientFlow`: θ' = −M(θ)^{-1}∇L (Euclidean, entropy / mirror, or a callable metric);
- `MomentumFlow`: θ'' + τ(t)θ' = −M(τθ + θ')^{-1}∇L (heavy ball, Nesterov, mirror momentum);
- both with an optional weight decay λ (constant or a function of t): θ' + λθ = −M^{-1}∇L,
  θ'' + τθ' + λθ = −M^{-1}∇L (`conflow.flows.decay`);
- `SignFlow`: θ' = −sign(∇L) (sign descent: Adam with β1 = β2 = 0, no ε);
- `parse_flow`: names (`FLOW_NAMES`) to flow objects; `mirror_metric`: the metric of a potential.
"""

from conflow.flows.base import AbstractFlow, FlowDynamics
from conflow.flows.gradient import GradientFlow
from conflow.flows.metrics import METRICS, InverseMetric, mirror_metric
from conflow.flows.momentum import NESTEROV, MomentumFlow
from conflow.flows.names import FLOW_NAMES, parse_flow
from conflow.flows.sign import SignFlow

__all__ = [
    "FLOW_NAMES",
    "METRICS",
    "NESTEROV",
    "AbstractFlow",
    "FlowDynamics",
    "GradientFlow",
    "InverseMetric",
    "MomentumFlow",
    "SignFlow",
    "mirror_metric",
    "parse_flow",
]
