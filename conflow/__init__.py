"""conflow: conservation laws of training flows (gradient, metric and momentum flows), with JAX.

Public API. Every computation runs in float64 (`float64_mode`, scoped to conflow's own calls:
importing conflow leaves the process's ``jax_enable_x64`` alone; see `conflow.precision`):

- models: `linear`, `relu`, `factorization`, `nmf`, `icnn`, `product`, `attention`, `conv`,
  `softmax_layer`, `mlp`, `resnet`, `transformer`, `residual`, `custom`, `get_model`;
- models from code: `from_model` → `SampledModel`; `count_laws_from_model` → `FromModelCount`;
- flows: `AbstractFlow`, `GradientFlow`, `MomentumFlow` (both with ``weight_decay=λ``),
  `SignFlow`, `mirror_metric`, `parse_flow`;
- counting: `count_laws` → `LawCount`; the engine `lie_trace` → `LieTrace` on a `VectorFamily`;
- which laws: `polynomial_laws` → `LawBasis` of `Law`s; `verify_law` → `Verdict`;
- training experiments: `simulate`, `train`, optimizers (`gd`, `heavy_ball`, `nesterov`,
  `mirror_descent`, ...), `drift_report`, `plot_drift` (loaded on first use: they bring diffrax,
  optax and matplotlib, which counting does not need);
- building blocks: `lie_bracket`, `bracket_chain`, `numerical_rank`.
"""

import importlib as _importlib

from conflow.compile_cache import enable_compile_cache
from conflow.engine.brackets import bracket_chain, lie_bracket
from conflow.engine.rank import RankCut, numerical_rank
from conflow.engine.trace import LieTrace, VectorFamily, lie_trace
from conflow.errors import InputError
from conflow.flows import (
    AbstractFlow,
    GradientFlow,
    MomentumFlow,
    SignFlow,
    mirror_metric,
    parse_flow,
)
from conflow.laws.count import LawCount, count_laws
from conflow.models import (
    Model,
    ParamBlock,
    attention,
    conv,
    custom,
    factorization,
    get_model,
    icnn,
    linear,
    mlp,
    nmf,
    product,
    relu,
    residual,
    resnet,
    softmax_layer,
    transformer,
)
from conflow.models.from_model import InputsWarning, SampledModel, from_model
from conflow.models.relu import init_mlp, mlp_forward
from conflow.precision import float64_mode

# Law discovery, verification and counts of models given as code, and the integrators,
# optimizers and plots (diffrax / optax / matplotlib, ~0.4 s): they load on first attribute
# access, so that `import conflow` and `conflow count` do not pay for them.
_LAZY = {
    "laws.expressions": ("LawExpression", "compile_law"),
    "laws.find": ("Law", "LawBasis", "polynomial_laws"),
    "laws.from_model_count": ("FromModelCount", "FromModelReport", "count_laws_from_model"),
    "laws.verify": ("EmpiricalReport", "Verdict", "check_complete", "simulate_drift",
                    "verify_law"),
    "training.drift": ("DriftReport", "LawDrift", "drift_report", "loglog_slope"),
    "training.problem": ("forward_fn", "init_params", "make_loss"),
    "training.monitors": ("Monitor", "rescaled_law"),
    "training.results": ("FlowState", "SimResult"),
    "training.simulate": ("Simulator", "make_simulator", "simulate"),
    "training.optimizers": ("Trainer", "TrainResult", "gd", "heavy_ball", "heavy_ball_flow",
                   "make_optimizer", "make_trainer", "mirror_descent", "mirror_heavy_ball",
                   "momentum_coefficients", "nesterov", "sign_descent", "train",
                   "with_weight_decay"),
    "training.plots": ("plot_drift", "plot_drift_vs_step"),
}
_LAZY_OWNER = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    module = _LAZY_OWNER.get(name)
    if module is None:
        raise AttributeError(f"module 'conflow' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_OWNER))

__all__ = [
    "DriftReport",
    "FlowState",
    "LawDrift",
    "Monitor",
    "SimResult",
    "Simulator",
    "Trainer",
    "TrainResult",
    "drift_report",
    "forward_fn",
    "gd",
    "heavy_ball",
    "heavy_ball_flow",
    "init_mlp",
    "init_params",
    "loglog_slope",
    "make_loss",
    "make_optimizer",
    "make_simulator",
    "make_trainer",
    "mirror_descent",
    "mirror_heavy_ball",
    "mlp_forward",
    "momentum_coefficients",
    "nesterov",
    "rescaled_law",
    "sign_descent",
    "with_weight_decay",
    "plot_drift",
    "plot_drift_vs_step",
    "simulate",
    "train",
    "AbstractFlow",
    "GradientFlow",
    "EmpiricalReport",
    "FromModelCount",
    "FromModelReport",
    "InputError",
    "InputsWarning",
    "Law",
    "LawBasis",
    "LawExpression",
    "LawCount",
    "MomentumFlow",
    "SignFlow",
    "LieTrace",
    "Model",
    "ParamBlock",
    "RankCut",
    "SampledModel",
    "VectorFamily",
    "Verdict",
    "check_complete",
    "compile_law",
    "attention",
    "conv",
    "count_laws",
    "count_laws_from_model",
    "custom",
    "factorization",
    "from_model",
    "get_model",
    "icnn",
    "lie_bracket",
    "lie_trace",
    "mirror_metric",
    "parse_flow",
    "linear",
    "bracket_chain",
    "mlp",
    "nmf",
    "numerical_rank",
    "enable_compile_cache",
    "float64_mode",
    "polynomial_laws",
    "product",
    "relu",
    "residual",
    "resnet",
    "simulate_drift",
    "softmax_layer",
    "transformer",
    "verify_law",
]
__version__ = "0.1.0"
