"""The scaling laws of RoPE-based extrapolation (Liu et al., arXiv 2310.05209, ICLR 2024).

Every number is computed by the C++ header ``include/ropex/scaling_law.hpp`` (``ropex._core``);
this module broadcasts numpy inputs and wraps the results. Notation:

* ``d`` (``head_dim``): rotary dimensions per head, pairs n = 0 .. d/2-1
* ``beta`` (``base``): rotary base; theta_n = beta^(-2n/d), period T_n = 2*pi*beta^(2n/d)
* ``T_train`` (``train_len``): pre-training context, trained with ``pretrain_base`` (the paper: 10000)
* ``T_tune`` (``tune_len``): context of the continued training with the new base (0: = T_train)

A numeric argument may be a number or an array; arrays broadcast against each other (numpy rules)
and every result field is then an array of the broadcast shape. Scalars in give Python scalars out.
Invalid input raises :class:`ropex.Error` naming the field, e.g. ``base: must be > 1, got 0.5``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from . import _core

Error = _core.Error

#: A number or an array of numbers (anything ``numpy.asarray`` takes).
Num = Union[float, int, npt.ArrayLike]
FloatResult = Union[float, npt.NDArray[np.float64]]
IntResult = Union[int, npt.NDArray[np.int32]]
BoolResult = Union[bool, npt.NDArray[np.bool_]]
StrResult = Union[str, npt.NDArray[np.str_]]

#: The five regimes of Theorem 3, in the order the C++ enum ``ropex::Regime`` lists them.
REGIMES: tuple[str, ...] = tuple(_core.regime_names)
_REGIME_ARRAY = np.asarray(REGIMES)
_EQUATIONS = dict(zip(_core.regime_names, _core.regime_equations))


def _is_scalar(*xs: object) -> bool:
    return all(isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) for x in xs)


def _int_scalar(name: str, x: Any) -> int:
    if isinstance(x, numbers.Integral):
        v = int(x)
    elif float(x).is_integer():
        v = int(x)
    else:
        raise Error(f"{name}: must be an integer, got {x!r}")
    if not -(2**31) <= v < 2**31:
        raise Error(f"{name}: must be a positive even number, got {v}")
    return v


def _as_ints(name: str, x: Any) -> npt.NDArray[np.int64]:
    a = np.asarray(x)
    if a.dtype.kind in "iu":
        return a.astype(np.int64, copy=False)
    if a.dtype.kind == "f":
        bad = a[~np.isfinite(a) | (a != np.round(a))] if a.size else a
        if bad.size:
            raise Error(f"{name}: must be an integer, got {bad.flat[0].item()!r}")
        return a.astype(np.int64)
    raise Error(f"{name}: expected integers, got an array of dtype {a.dtype}")


def _as_floats(name: str, x: Any) -> npt.NDArray[np.float64]:
    a = np.asarray(x)
    if a.dtype.kind not in "iuf":
        raise Error(f"{name}: expected numbers, got an array of dtype {a.dtype}")
    return a.astype(np.float64, copy=False)


def _columns(arrays: list[npt.NDArray[Any]]) -> tuple[tuple[int, ...], list[npt.NDArray[Any]]]:
    """Broadcast shape and 1-D columns of it (stride-0 views, no copy, when the shape is 1-D)."""
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError as e:
        raise Error(f"arguments: shapes do not broadcast: {e}") from None
    flat = (int(np.prod(shape)),) if shape else (1,)
    cols = [np.broadcast_to(a, shape).reshape(flat) if len(shape) != 1 else np.broadcast_to(a, shape) for a in arrays]
    return shape, cols


def _shaped(shape: tuple[int, ...], a: npt.NDArray[Any]) -> Any:
    return a.reshape(shape + a.shape[1:]) if shape else a[0].item() if a.ndim == 1 else a[0]


@dataclass(frozen=True)
class SmallBaseThresholds:
    """The small-base thresholds of eq. 16d for T = T_tune (the slowest pair's period ~ 2*pi*beta).

    * ``beta_1 = 2*T/pi``: a quarter period of the slowest pair fits in T_tune
    * ``beta_2 = T/pi``: half a period fits
    * ``beta_3 = T/(2*pi)``: a full period fits
    """

    beta_1: FloatResult
    beta_2: FloatResult
    beta_3: FloatResult


@dataclass(frozen=True, init=False)
class ExtrapolationLimit:
    """Everything Theorem 3 (eq. 16a-16d) says about one (d, T_train, beta, T_tune, beta_pt).

    Fields (C++ ``ropex::ExtrapolationLimit``):

    * ``regime``: ``larger_base`` (16b: beta > beta_0, hard bound 2*pi*beta^(d_extra/d)),
      ``tune_length`` (16c: beta_1 < beta <= beta_0, bound T_tune), ``small_base_quarter`` /
      ``small_base_half`` / ``small_base_full`` (16d: the slowest pair sees >= 1/4, 1/2, a full period)
    * ``limit``: the predicted extrapolation bound in tokens
    * ``hard_bound``: perplexity explodes past ``limit`` (16b, 16c); False: small base, degrades smoothly
    * ``critical_dimension``: d_extra (eq. 13) of the pre-trained model
    * ``updated_applies``: beta <= beta_0, so 16c's d'_extra is meaningful
    * ``updated_critical_dimension``: d'_extra (16c) when ``updated_applies``, else d_extra
    * ``critical_base``: beta_0 (16a)
    * ``larger_base_limit``: 2*pi*beta^(d_extra/d) (16b), whichever regime applies
    * ``thresholds``: beta_1, beta_2, beta_3 (16d)

    For array inputs ``regime`` is a numpy array of str made on first read (a million 18-character
    strings are 72 MB; a sweep that reads only ``limit`` never makes them).
    """

    regime: StrResult
    limit: FloatResult
    hard_bound: BoolResult
    critical_dimension: IntResult
    updated_applies: BoolResult
    updated_critical_dimension: IntResult
    critical_base: FloatResult
    larger_base_limit: FloatResult
    thresholds: SmallBaseThresholds

    def __init__(self, regime: Union[StrResult, npt.NDArray[np.int8]], limit: FloatResult, hard_bound: BoolResult,
                 critical_dimension: IntResult, updated_applies: BoolResult, updated_critical_dimension: IntResult,
                 critical_base: FloatResult, larger_base_limit: FloatResult, thresholds: SmallBaseThresholds) -> None:
        """``regime``: the name, an array of names, or an int8 array of ``ropex::Regime`` codes."""
        put = object.__setattr__  # frozen: fields are set once, here
        if isinstance(regime, np.ndarray) and regime.dtype == np.int8:
            put(self, "_regime_codes", regime)
        else:
            put(self, "regime", regime)
        for k, v in (("limit", limit), ("hard_bound", hard_bound), ("critical_dimension", critical_dimension),
                     ("updated_applies", updated_applies), ("updated_critical_dimension", updated_critical_dimension),
                     ("critical_base", critical_base), ("larger_base_limit", larger_base_limit),
                     ("thresholds", thresholds)):
            put(self, k, v)

    def __getattr__(self, name: str) -> Any:  # only reached while `regime` is still codes
        codes = self.__dict__.get("_regime_codes")
        if name != "regime" or codes is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        names = _REGIME_ARRAY[codes]
        object.__setattr__(self, "regime", names)
        return names

    @property
    def equation(self) -> StrResult:
        """The paper's equation behind ``limit``: ``16b``, ``16c`` or ``16c+16d``."""
        if isinstance(self.regime, str):
            return _EQUATIONS[self.regime]
        return np.vectorize(_EQUATIONS.__getitem__, otypes=[str])(self.regime)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class BaseForContext:
    """Both inverses of 16b for a target context T (C++ ``ropex::BaseForContext``).

    * ``target``: T, tokens
    * ``critical_dimension``: d_extra (eq. 13) used by the exact inverse
    * ``base``: exact inverse of 16b, (T/2pi)^(d/d_extra)
    * ``base_ceiling_free``: the 16a form beta_pt^(log_{T_train/2pi}(T/2pi)) (d_extra without its ceil)
    """

    target: FloatResult
    critical_dimension: IntResult
    base: FloatResult
    base_ceiling_free: FloatResult


@dataclass(frozen=True)
class PeriodTable:
    """The per-pair table under a base (C++ ``ropex::PairPeriod`` rows as columns).

    Each field has shape ``broadcast_shape + (head_dim/2,)``; pair n rotates dims (n, n + d/2) in
    the half layout and (2n, 2n+1) in the interleaved one.

    * ``pair``: n
    * ``theta``: beta^(-2n/d), radians per token
    * ``period``: 2*pi/theta, tokens
    * ``full_period_in_train`` / ``full_period_in_tune``: a whole period fits in 0..T_train-1 / 0..T_tune-1
    """

    pair: npt.NDArray[np.int32]
    theta: npt.NDArray[np.float64]
    period: npt.NDArray[np.float64]
    full_period_in_train: npt.NDArray[np.bool_]
    full_period_in_tune: npt.NDArray[np.bool_]


def critical_dimension(head_dim: Num, train_len: Num, pretrain_base: Num = 10000) -> IntResult:
    """Critical dimension d_extra (Lemma 1, eq. 12-13).

    d_extra = 2 * ceil((d/2) * log_{beta_pt}(T_train / (2*pi))), capped at d: the dimensions whose
    pairs complete a full period inside the training context. The paper fixes beta_pt = 10000.
    LLaMA-2 (d = 128, T_train = 4096): 92.
    """
    if _is_scalar(head_dim, train_len, pretrain_base):
        return _core.critical_dimension(_int_scalar("head_dim", head_dim), float(train_len), float(pretrain_base))  # type: ignore[arg-type]
    shape, cols = _columns([_as_ints("head_dim", head_dim), _as_floats("train_len", train_len),
                            _as_floats("pretrain_base", pretrain_base)])
    return _shaped(shape, _core.critical_dimension_v(*cols))  # type: ignore[no-any-return]


def critical_base(train_len: Num, tune_len: Num = 0, pretrain_base: Num = 10000) -> FloatResult:
    """Critical base beta_0 (eq. 16a).

    beta_0 = beta_pt^(log_{T_train/2pi}(T_tune/2pi)); beta_pt when T_tune = T_train (tune_len 0).
    Tuned at T_tune, a base above beta_0 has the larger-base bound 16b; one at or below it
    extrapolates to T_tune (16c). LLaMA-2 tuned at 16K: 71738.4.
    """
    if _is_scalar(train_len, tune_len, pretrain_base):
        return _core.critical_base(float(train_len), float(tune_len), float(pretrain_base))  # type: ignore[arg-type]
    shape, cols = _columns([_as_floats("train_len", train_len), _as_floats("tune_len", tune_len),
                            _as_floats("pretrain_base", pretrain_base)])
    return _shaped(shape, _core.critical_base_v(*cols))  # type: ignore[no-any-return]


def _limit(t: tuple[Any, ...], shape: tuple[int, ...] | None = None) -> ExtrapolationLimit:
    if shape is None:
        regime: Any = REGIMES[t[0]]
        f = list(t[1:])
    else:
        codes: npt.NDArray[np.int8] = t[0]  # named on first read of .regime
        regime = codes.reshape(shape) if shape else REGIMES[int(codes[0])]
        n = len(codes)
        # one model's terms come back as one value: a read-only broadcast view of the full shape
        f = [_shaped(shape, a) if len(a) == n else np.broadcast_to(a, shape) for a in t[1:]]
    return ExtrapolationLimit(regime, f[0], f[1], f[2], f[3], f[4], f[5], f[6], SmallBaseThresholds(f[7], f[8], f[9]))


def extrapolation_limit(head_dim: Num, train_len: Num, base: Num, tune_len: Num = 0,
                        pretrain_base: Num = 10000) -> ExtrapolationLimit:
    """Extrapolation limit after tuning with ``base`` at ``tune_len`` (Theorem 3, eq. 16a-16d).

    With d_extra = 2*ceil((d/2) log_{beta_pt}(T_train/2pi)) (eq. 13) and beta_0 the critical base (16a):

    * beta > beta_0 (16b): ``limit`` = 2*pi*beta^(d_extra/d), a hard bound
    * beta_1 < beta <= beta_0 (16c): ``limit`` = T_tune, hard; d'_extra = 2*ceil((d/2) log_beta(T_tune/2pi))
    * beta <= beta_1 = 2*T_tune/pi (16d): ``limit`` = T_tune, degrading smoothly past it

    ``tune_len`` 0 means T_tune = T_train. LLaMA-2 (128, 4096) at base 1e6: 129026.8 tokens.
    Every argument may be an array: ``extrapolation_limit(128, 4096, base=np.logspace(3, 8, 200))``
    returns an :class:`ExtrapolationLimit` whose fields are arrays of 200.
    """
    if _is_scalar(head_dim, train_len, base, tune_len, pretrain_base):
        return _limit(_core.extrapolation_limit(_int_scalar("head_dim", head_dim), float(train_len), float(base),  # type: ignore[arg-type]
                                                float(tune_len), float(pretrain_base)))  # type: ignore[arg-type]
    shape, cols = _columns([_as_ints("head_dim", head_dim), _as_floats("train_len", train_len), _as_floats("base", base),
                            _as_floats("tune_len", tune_len), _as_floats("pretrain_base", pretrain_base)])
    return _limit(_core.extrapolation_limit_v(*cols), shape)


def base_for_context(target: Num, head_dim: Num, train_len: Num, pretrain_base: Num = 10000) -> BaseForContext:
    """The base that puts the 16b bound at ``target`` tokens: both inverses of eq. 16b.

    * ``base`` = (T/2pi)^(d/d_extra): the exact inverse (d_extra from eq. 13)
    * ``base_ceiling_free`` = beta_pt^(log_{T_train/2pi}(T/2pi)): 16a with T_tune = T (no ceil)

    LLaMA-2 to 128K (131072, 128, 4096): base 1022121.9, ceiling-free 1378414.3.
    """
    if _is_scalar(target, head_dim, train_len, pretrain_base):
        t = _core.base_for_context(float(target), _int_scalar("head_dim", head_dim), float(train_len), float(pretrain_base))  # type: ignore[arg-type]
        return BaseForContext(*t)
    shape, cols = _columns([_as_floats("target", target), _as_ints("head_dim", head_dim),
                            _as_floats("train_len", train_len), _as_floats("pretrain_base", pretrain_base)])
    return BaseForContext(*(_shaped(shape, a) for a in _core.base_for_context_v(*cols)))


def period_table(head_dim: int, base: Num, train_len: Num, tune_len: Num = 0) -> PeriodTable:
    """Per-pair table under ``base``: theta_n = beta^(-2n/d), period 2*pi/theta_n, and whether a
    full period fits in T_train / T_tune (the counts of True are d_extra/2 at the pre-training
    base, eq. 13, and d'_extra/2 at the tuning base, 16c). ``head_dim`` is one number (the table
    has d/2 rows); ``base``, ``train_len``, ``tune_len`` may be arrays (a leading shape)."""
    d = _int_scalar("head_dim", head_dim) if _is_scalar(head_dim) else None
    if d is None:
        raise Error(f"head_dim: must be one integer (the table has head_dim/2 rows), got {head_dim!r}")
    shape, cols = _columns([_as_floats("base", base), _as_floats("train_len", train_len), _as_floats("tune_len", tune_len)])
    out: tuple[Any, ...] = _core.period_table_v(d, *cols)
    fields = [a[0] if not shape else a.reshape(shape + a.shape[1:]) for a in out]
    return PeriodTable(fields[0], fields[1], fields[2], fields[3], fields[4])
