"""The published theories of how far a RoPE model's context reaches, next to Liu et al.'s law.

Every number is computed by the C++ header ``include/ropex/theories.hpp`` (``ropex._core``), the
code behind ``ropex theories``; docs/theories.md has the math. Notation as :mod:`ropex._laws`:
d rotary dims (``head_dim``), pairs i = 0 .. d/2-1, theta_i = b^(-2i/d), b the rotary ``base``.

* Men et al., "Base of RoPE Bounds Context Length" (arXiv 2405.14591): the discrimination sum
  B_m = sum_i cos(m theta_i) (eq. 9) must stay >= 0 for every distance m of the context (eq. 10-11).
* Cut-points: YaRN / NTK-by-parts (arXiv 2309.00071), Llama 3 (arXiv 2407.21783), HoPE
  (arXiv 2410.21216), p-RoPE (arXiv 2410.06205) and Liu et al.'s critical dimension (arXiv 2310.05209).
* Numeric bounds of bf16 / fp16 / fp32 positions and angles, and the slowest pair's period.

Numeric arguments may be arrays; they broadcast (numpy rules) and every result field becomes an
array of the broadcast shape. All-scalar calls give Python scalars. Bad input raises
:class:`ropex.Error` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._laws import BoolResult, FloatResult, IntResult, Num, _as_floats, _as_ints, _columns, _shaped

Error = _core.Error

#: Distances ``men_context_length`` scans by default: 0 .. 2^24-1, as ``ropex theories``.
MEN_SCAN_CAP = 1 << 24


def _fields(shape: tuple[int, ...], out: tuple[Any, ...]) -> list[Any]:
    return [_shaped(shape, a) for a in out]


@dataclass(frozen=True)
class MenLength:
    """The context one base supports under Men et al.'s condition (C++ ``ropex::MenLength``).

    * ``bounded``: a distance m < ``cap`` with B_m < 0 exists
    * ``length``: the first such m, the tokens supported (distances 0 .. length-1 all have
      B_m >= 0; eq. 10's L_theta = length - 1 counts distances); ``cap`` when unbounded
    * ``cap``: distances scanned, 0 .. cap-1 (every one, no sampling)
    * ``value_at_length``: B_m at m = ``length`` (negative when bounded, 0 otherwise)
    """

    bounded: BoolResult
    length: IntResult
    cap: IntResult
    value_at_length: FloatResult


@dataclass(frozen=True)
class MenBase:
    """Men et al.'s lower bound on the base for ``target`` tokens (C++ ``ropex::MenBase``).

    * ``base``: the smallest base found with B_m >= 0 for all m < target (proven by a full scan)
    * ``infeasible_below``, ``witness``: a base just below, refuted by B_witness < 0 (the bracket)
    * ``grid_step``: relative step of the last scan over bases (the resolution of the answer)
    * ``bases_tried``, ``full_scans``: work done (bases evaluated; those needing a scan over m)
    """

    target: IntResult
    base: FloatResult
    infeasible_below: FloatResult
    witness: IntResult
    grid_step: FloatResult
    bases_tried: IntResult
    full_scans: IntResult


@dataclass(frozen=True)
class CutPoints:
    """Where each method splits the d/2 pairs by period (C++ ``ropex::CutPoints``).

    * YaRN / NTK-by-parts: ``yarn_low_fractional`` / ``yarn_high_fractional`` = corr_dim(beta) =
      (d/2) log_b(L0 / (2 pi beta)) for beta_fast / beta_slow; ``yarn_low`` / ``yarn_high`` the ramp
      ends as HF truncates and clamps them; ``yarn_fast_period`` = L0/beta_fast,
      ``yarn_slow_period`` = L0/beta_slow tokens
    * Llama 3: periods below ``llama3_high_freq_wavelen`` = L0/high_freq_factor are kept
      (``llama3_pairs_kept``), above ``llama3_low_freq_wavelen`` = L0/low_freq_factor scaled
      (``llama3_pairs_scaled``)
    * HoPE: ``hope_pairs_kept`` pairs complete a full period inside T_train and keep rotating
    * p-RoPE: ``p_rope_pairs_kept`` = floor(p d/2) highest-frequency pairs for ``p_rope_p`` = p
    * Liu et al.: ``liu_critical_pairs`` = d_extra/2 (eq. 13)
    """

    yarn_low_fractional: FloatResult
    yarn_high_fractional: FloatResult
    yarn_low: FloatResult
    yarn_high: FloatResult
    yarn_fast_period: FloatResult
    yarn_slow_period: FloatResult
    llama3_high_freq_wavelen: FloatResult
    llama3_low_freq_wavelen: FloatResult
    llama3_pairs_kept: IntResult
    llama3_pairs_scaled: IntResult
    hope_pairs_kept: IntResult
    p_rope_p: FloatResult
    p_rope_pairs_kept: IntResult
    liu_critical_pairs: IntResult


@dataclass(frozen=True)
class NumericBounds:
    """Position and angle bounds of one floating-point format (C++ ``ropex::NumericBounds``).

    * ``dtype``: ``bf16``, ``fp16`` or ``fp32``; ``precision``: its significand bits p (8, 11, 24)
    * ``exact_positions`` = 2^p: every position 0 .. 2^p is exact, 2^p + 1 is not
    * ``angle_error_position`` = 2^(p + 1 + floor(log2 tol)): first position where the fastest
      pair's angle (theta_0 = 1) rounded to the format can be off by more than ``tolerance`` radians
    """

    dtype: str
    precision: int
    exact_positions: FloatResult
    angle_error_position: FloatResult
    tolerance: FloatResult


def men_sum(head_dim: Num, base: Num, m: Num, static_pairs: Num = 0) -> FloatResult:
    """Men et al.'s discrimination sum (arXiv 2405.14591, eq. 9) at distance ``m``:

    B_m = sum_{i < d/2} cos(m b^(-2i/d)) + static_pairs

    evaluated in long double from the exact angle. ``static_pairs``: pairs of a partially rotary
    head that do not rotate (cos 0 = 1 each). A context of L tokens is supported when B_m >= 0
    for every m < L.
    """
    shape, cols = _columns([_as_ints("head_dim", head_dim), _as_floats("base", base), _as_ints("m", m),
                            _as_ints("static_pairs", static_pairs)])
    return _shaped(shape, _core.men_sum_v(*cols))  # type: ignore[no-any-return]


def men_context_length(head_dim: Num, base: Num, cap: Num = MEN_SCAN_CAP, static_pairs: Num = 0) -> MenLength:
    """The context ``base`` supports under Men et al.'s condition (the inverse of their eq. 11):
    the first distance m with B_m < 0 (eq. 9), scanning every m = 0 .. cap-1 (``ropex theories``
    scans 2^24). A scan of 2^24 distances takes about a second per base; Ctrl-C stops between bases.
    """
    shape, cols = _columns([_as_ints("head_dim", head_dim), _as_floats("base", base), _as_ints("cap", cap),
                            _as_ints("static_pairs", static_pairs)])
    return MenLength(*_fields(shape, _core.men_context_length_v(*cols)))


def men_base_for_context(head_dim: Num, target: Num, static_pairs: Num = 0, *, grid_step: float = 1e-3,
                         fine_step: float = 1e-5, base_min: float = 2.0, base_max: float = 1e30,
                         fine_span: float = 2.0, rel_tol: float = 1e-12, refine_points: int = 64) -> MenBase:
    """Men et al.'s lower bound on the base (arXiv 2405.14591, eq. 11): the smallest b with
    B_m >= 0 for every distance m < ``target`` (eq. 9).

    The feasible set is not monotone in b, so the solver scans bases upward on a log grid
    (``grid_step``), then a finer one (``fine_step``) over [hit / ``fine_span``, hit), and refines
    the bracket to ``rel_tol`` with ``refine_points`` sub-steps a level; each base is proven
    feasible by a full exact scan of m < target or refuted by an explicit m. The defaults are
    ``ropex theories``'s. A feasible island narrower than the grid step can be missed
    (docs/theories.md). ``head_dim``, ``target``, ``static_pairs`` may be arrays; one solve takes
    from milliseconds to seconds; Ctrl-C stops between solves.
    """
    shape, cols = _columns([_as_ints("head_dim", head_dim), _as_ints("target", target),
                            _as_ints("static_pairs", static_pairs)])
    out = _core.men_base_for_context_v(cols[0], cols[1], cols[2], float(grid_step), float(fine_step), float(base_min), float(base_max),
                                       float(fine_span), float(rel_tol), int(refine_points))
    return MenBase(*_fields(shape, out))


def cut_points(head_dim: Num, base: Num, train_len: Num, original_context: Optional[Num] = None,
               pretrain_base: Num = 10000, *, beta_fast: Num = 32, beta_slow: Num = 1, low_freq_factor: Num = 1,
               high_freq_factor: Num = 4, p: Num = 0.75) -> CutPoints:
    """Pair cut-points of the methods that split RoPE's pairs by period, for one model.

    ``original_context`` is L0 of YaRN and Llama 3 (``original_max_position_embeddings``; default
    ``train_len``, as ``ropex theories``); ``train_len`` and ``pretrain_base`` serve HoPE and Liu's
    d_extra (eq. 13). YaRN's betas (32, 1), Llama 3's factors (1, 4) and p-RoPE's p = 0.75 default
    to the published settings. With period_i = 2 pi b^(2i/d): YaRN keeps pairs below
    corr_dim(beta_fast) = (d/2) log_b(L0 / (2 pi beta_fast)) and interpolates past
    corr_dim(beta_slow) (arXiv 2309.00071, NTK-by-parts); Llama 3 keeps periods < L0/high_freq_factor
    and divides those > L0/low_freq_factor by its factor; HoPE (arXiv 2410.21216) keeps the pairs
    with a full period in T_train; p-RoPE (arXiv 2410.06205) keeps floor(p d/2).
    """
    l0 = train_len if original_context is None else original_context
    shape, cols = _columns([
        _as_ints("head_dim", head_dim), _as_floats("base", base), _as_floats("original_context", l0),
        _as_floats("train_len", train_len), _as_floats("pretrain_base", pretrain_base),
        _as_floats("beta_fast", beta_fast), _as_floats("beta_slow", beta_slow),
        _as_floats("low_freq_factor", low_freq_factor), _as_floats("high_freq_factor", high_freq_factor),
        _as_floats("p", p)])
    return CutPoints(*_fields(shape, _core.cut_points_v(*cols)))


_DTYPE_NAMES = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16",
                "fp32": "fp32", "float32": "fp32", "single": "fp32"}


def _dtype_name(dtype: Union[str, npt.DTypeLike]) -> str:
    if isinstance(dtype, str):
        name = dtype
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            raise Error(f"dtype: must be bf16, fp16 or fp32, got {dtype!r}") from None
    if name not in _DTYPE_NAMES:
        raise Error(f'dtype: must be bf16, fp16 or fp32, got "{name}"')
    return _DTYPE_NAMES[name]


def numeric_bounds(dtype: Union[str, npt.DTypeLike], tolerance: Num = 1e-2) -> NumericBounds:
    """Where a format stops holding RoPE positions and angles: with p its significand precision,
    positions 0 .. 2^p are exact (2^p + 1 is not), and the fastest pair's angle pos * theta_0
    (theta_0 = 1) rounded to the format errs by up to ulp/2 = 2^(e-p) on [2^e, 2^(e+1)), more than
    ``tolerance`` radians from 2^(p + 1 + floor(log2 tol)) on. ``dtype``: "bf16" / "fp16" / "fp32"
    or the numpy dtype (``np.float16``, ``np.float32``, ``ml_dtypes.bfloat16``); ``tolerance`` may
    be an array."""
    name = _dtype_name(dtype)
    shape, cols = _columns([_as_floats("tolerance", tolerance)])
    f = _fields(shape, _core.numeric_bounds_v(name, *cols))
    precision = int(np.asarray(f[0]).flat[0])
    return NumericBounds(name, precision, f[1], f[2], f[3])


def slowest_period(head_dim: Num, base: Num) -> FloatResult:
    """Period of the slowest pair i = d/2-1: 2 pi b^((d-2)/d) tokens. Past it that pair's angle
    aliases (positions a period apart look the same to it)."""
    shape, cols = _columns([_as_ints("head_dim", head_dim), _as_floats("base", base)])
    return _shaped(shape, _core.slowest_period_v(*cols))  # type: ignore[no-any-return]


def base_for_slowest_period(head_dim: Num, target: Num) -> FloatResult:
    """The base whose slowest period is ``target`` tokens: b = (T/2pi)^(d/(d-2)) (d >= 4), the
    inverse of :func:`slowest_period`."""
    shape, cols = _columns([_as_ints("head_dim", head_dim), _as_floats("target", target)])
    return _shaped(shape, _core.base_for_slowest_period_v(*cols))  # type: ignore[no-any-return]
