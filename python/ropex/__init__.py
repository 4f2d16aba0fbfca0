"""ropex: RoPE scaling laws (Liu et al., "Scaling Laws of RoPE-based Extrapolation", arXiv 2310.05209),
every RoPE variant real checkpoints use, and a LLaMA-family forward to check a prediction against a
model's own long-context perplexity. Python bindings of the C++ library (one implementation).

How far will my model go (LLaMA-2: d = 128, T_train = 4096, tuned with base 1e6)::

    import ropex
    lim = ropex.extrapolation_limit(head_dim=128, train_len=4096, base=1e6)
    print(lim.limit, lim.regime)          # 129026.78... larger_base (eq. 16b)
"""

from ._core import Error, RopeTable, __version__, has_cuda
from ._laws import (
    REGIMES,
    BaseForContext,
    ExtrapolationLimit,
    PeriodTable,
    SmallBaseThresholds,
    base_for_context,
    critical_base,
    critical_dimension,
    extrapolation_limit,
    period_table,
)
from ._model import Model, PasskeyCell, PasskeyResult, PasskeyTrial, PerplexityResult, PositionBin, check, passkey
from ._rope import RopeScaling, apply_rope, rope_table
from ._theories import (
    MEN_SCAN_CAP,
    CutPoints,
    MenBase,
    MenLength,
    NumericBounds,
    base_for_slowest_period,
    cut_points,
    men_base_for_context,
    men_context_length,
    men_sum,
    numeric_bounds,
    slowest_period,
)

Error.__module__ = "ropex"
Error.__doc__ = ('Invalid input (argument, file, JSON field): a ValueError whose message reads '
                 '"<source>: <field>: <problem>", the text the ropex CLI prints.')

__all__ = [
    "MEN_SCAN_CAP", "REGIMES", "BaseForContext", "CutPoints", "Error", "ExtrapolationLimit", "MenBase", "MenLength",
    "Model", "NumericBounds", "PasskeyCell", "PasskeyResult", "PasskeyTrial", "PerplexityResult", "PeriodTable", "PositionBin", "RopeScaling", "RopeTable",
    "SmallBaseThresholds", "__version__", "apply_rope", "base_for_context", "base_for_slowest_period",
    "check", "critical_base", "critical_dimension", "cut_points", "extrapolation_limit", "has_cuda", "men_base_for_context",
    "men_context_length", "men_sum", "numeric_bounds", "passkey", "period_table", "rope_table", "slowest_period",
]
