# Stubs of the nanobind extension ropex._core (python/src/*.cpp); checked by mypy's stubtest in
# python/tests/test_typing.py. The package ropex wraps these; use it instead.
from collections.abc import Callable
from os import PathLike
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

__version__: str
has_cuda: bool
regime_names: list[str]
regime_equations: list[str]

class Error(ValueError): ...

def critical_dimension(head_dim: int, train_len: float, pretrain_base: float = 10000.0) -> int: ...
def critical_base(train_len: float, tune_len: float = 0.0, pretrain_base: float = 10000.0) -> float: ...
def extrapolation_limit(
    head_dim: int, train_len: float, base: float, tune_len: float = 0.0, pretrain_base: float = 10000.0
) -> tuple[int, float, bool, int, bool, int, float, float, float, float, float]: ...
def base_for_context(
    target: float, head_dim: int, train_len: float, pretrain_base: float = 10000.0
) -> tuple[float, int, float, float]: ...
def critical_dimension_v(
    head_dim: npt.NDArray[np.int64], train_len: npt.NDArray[np.float64], pretrain_base: npt.NDArray[np.float64]
) -> npt.NDArray[np.int32]: ...
def critical_base_v(
    train_len: npt.NDArray[np.float64], tune_len: npt.NDArray[np.float64], pretrain_base: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]: ...
def extrapolation_limit_v(
    head_dim: npt.NDArray[np.int64],
    train_len: npt.NDArray[np.float64],
    base: npt.NDArray[np.float64],
    tune_len: npt.NDArray[np.float64],
    pretrain_base: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[Any], ...]: ...
def base_for_context_v(
    target: npt.NDArray[np.float64],
    head_dim: npt.NDArray[np.int64],
    train_len: npt.NDArray[np.float64],
    pretrain_base: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int32], npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def period_table_v(
    head_dim: int, base: npt.NDArray[np.float64], train_len: npt.NDArray[np.float64], tune_len: npt.NDArray[np.float64]
) -> tuple[
    npt.NDArray[np.int32], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]
]: ...

def men_sum_v(
    head_dim: npt.NDArray[np.int64],
    base: npt.NDArray[np.float64],
    m: npt.NDArray[np.int64],
    static_pairs: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]: ...
def men_context_length_v(
    head_dim: npt.NDArray[np.int64],
    base: npt.NDArray[np.float64],
    cap: npt.NDArray[np.int64],
    static_pairs: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[Any], ...]: ...
def men_base_for_context_v(
    head_dim: npt.NDArray[np.int64],
    target: npt.NDArray[np.int64],
    static_pairs: npt.NDArray[np.int64],
    grid_step: float,
    fine_step: float,
    base_min: float,
    base_max: float,
    fine_span: float,
    rel_tol: float,
    refine_points: int,
) -> tuple[npt.NDArray[Any], ...]: ...
def cut_points_v(
    head_dim: npt.NDArray[np.int64],
    base: npt.NDArray[np.float64],
    original_context: npt.NDArray[np.float64],
    train_len: npt.NDArray[np.float64],
    pretrain_base: npt.NDArray[np.float64],
    beta_fast: npt.NDArray[np.float64],
    beta_slow: npt.NDArray[np.float64],
    low_freq_factor: npt.NDArray[np.float64],
    high_freq_factor: npt.NDArray[np.float64],
    p: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[Any], ...]: ...
def numeric_bounds_v(dtype: str, tolerance: npt.NDArray[np.float64]) -> tuple[npt.NDArray[Any], ...]: ...
def slowest_period_v(head_dim: npt.NDArray[np.int64], base: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...
def base_for_slowest_period_v(
    head_dim: npt.NDArray[np.int64], target: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]: ...

class RopeScaling:
    @staticmethod
    def from_config(config: Union[dict[str, Any], str, PathLike[str]], source: Optional[str] = None) -> RopeScaling: ...
    def with_overrides(
        self, base: Optional[float] = None, rope_scaling: Optional[Union[dict[str, Any], str]] = None
    ) -> RopeScaling: ...
    @property
    def type(self) -> str: ...
    @property
    def base(self) -> float: ...
    @property
    def factor(self) -> float: ...
    @property
    def partial_rotary_factor(self) -> float: ...
    @property
    def max_position_embeddings(self) -> int: ...
    @property
    def original_max_position_embeddings(self) -> int: ...
    @property
    def beta_fast(self) -> float: ...
    @property
    def beta_slow(self) -> float: ...
    @property
    def mscale(self) -> float: ...
    @property
    def mscale_all_dim(self) -> float: ...
    @property
    def truncate(self) -> bool: ...
    @property
    def attention_factor_override(self) -> float: ...
    @property
    def low_freq_factor(self) -> float: ...
    @property
    def high_freq_factor(self) -> float: ...
    @property
    def short_factor(self) -> list[float]: ...
    @property
    def long_factor(self) -> list[float]: ...
    def original_length(self) -> int: ...
    def rotary_dim(self, head_dim: int) -> int: ...
    def inv_freq(self, rotary_dim: int, seq_len: int = 0) -> npt.NDArray[np.float64]: ...
    def attention_factor(self, seq_len: int = 0) -> float: ...

class RopeTable:
    """cos/sin table [n_tokens, half] (float32) for apply_rope; build it with ropex.rope_table."""
    @property
    def n_tokens(self) -> int: ...
    @property
    def half(self) -> int: ...
    @property
    def cos(self) -> npt.NDArray[np.float32]: ...
    @property
    def sin(self) -> npt.NDArray[np.float32]: ...

def rope_table(
    inv_freq: npt.NDArray[np.float64], positions: npt.NDArray[np.int64], attention_factor: float = 1.0
) -> RopeTable: ...
def apply_rope(x: npt.NDArray[Any], table: RopeTable, layout: str = "half", elem: str = "") -> None: ...

class PerplexityResult:
    @property
    def perplexity(self) -> float: ...
    @property
    def mean_nll(self) -> float: ...
    @property
    def tokens(self) -> int: ...
    @property
    def context(self) -> int: ...
    @property
    def stride(self) -> int: ...
    @property
    def windows(self) -> int: ...
    @property
    def position_nll_sum(self) -> npt.NDArray[np.float64]: ...
    @property
    def position_count(self) -> npt.NDArray[np.int64]: ...
    @property
    def curve(self) -> list[tuple[int, int, int, float]]: ...

class Model:
    def __init__(
        self,
        path: Union[str, PathLike[str]],
        device: str = "cpu",
        dtype: Optional[str] = None,
        rope_base: Optional[float] = None,
        rope_scaling: Optional[Union[dict[str, Any], str]] = None,
        threads: int = 0,
    ) -> None: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def rope(self) -> RopeScaling: ...
    @property
    def format(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    def logits(
        self, ids: npt.NDArray[np.int64], progress: Optional[Callable[[int, int], object]] = None
    ) -> npt.NDArray[np.float32]: ...
    def nll(
        self, ids: npt.NDArray[np.int64], progress: Optional[Callable[[int, int], object]] = None
    ) -> npt.NDArray[np.float64]: ...
    def perplexity(
        self,
        ids: npt.NDArray[np.int64],
        context: int,
        stride: int = 0,
        bins: int = 32,
        bos_windows: bool = False,
        progress: Optional[Callable[[int, int], object]] = None,
    ) -> PerplexityResult: ...
    def generate(
        self,
        prompt: Optional[npt.NDArray[np.int64]] = None,
        steps: int = 16,
        temperature: float = 0.0,
        seed: int = 0,
        stop_at_eos: bool = False,
        progress: Optional[Callable[[int, int], object]] = None,
    ) -> list[int]: ...
    def passkey(
        self,
        lengths: list[int],
        depths: list[float],
        trials: int,
        seed: int,
        progress: Optional[Callable[[int, int], object]] = None,
    ) -> tuple[
        list[tuple[int, float, int, int, float, float, float]],
        list[tuple[int, float, int, int, int, int, bool, str, int, float]],
        float,
        float,
        int,
    ]: ...
    def check(
        self,
        text: Union[str, PathLike[str]],
        report: Union[str, PathLike[str]],
        max_len: Optional[int] = None,
        windows: Optional[int] = None,
        short_window: Optional[int] = None,
        train_len: Optional[float] = None,
        tune_len: Optional[float] = None,
        pretrain_base: Optional[float] = None,
        rope_scaling: list[str] = [],
        rope_base: list[float] = [],
        passkey_depths: Optional[list[float]] = None,
        passkey_trials: Optional[int] = None,
        seed: Optional[int] = None,
        progress: Optional[Callable[[int, int], object]] = None,
    ) -> str: ...
    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]: ...
    def detokenize(self, ids: list[int], skip_special: bool = False) -> str: ...
