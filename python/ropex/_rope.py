"""RoPE: a checkpoint's rotary settings, their frequencies, cos/sin tables and the rotation itself.

All math is the C++ library's (``include/ropex/rope/{scaling,frequencies,apply}.hpp``, the same code
the model forward runs), which matches Hugging Face transformers to float rounding for every
variant (default/ABF, linear PI, NTK, dynamic NTK, YaRN, Llama 3, LongRoPE).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core

Error = _core.Error
RopeTable = _core.RopeTable

ConfigLike = Union[dict[str, Any], str, "os.PathLike[str]"]


class RopeScaling:
    """A model's RoPE settings: variant, base and every variant parameter (C++ ``ropex::RopeScaling``).

    Per pair i of a rotary dim d the default frequency is theta_i = base^(-2i/d) (RoFormer eq. 15);
    each variant rewrites theta_i (``inv_freq``) and may scale cos/sin by ``attention_factor``
    (docs/rope-variants.md has every variant's formula).
    """

    __slots__ = ("_r",)

    def __init__(self, core: _core.RopeScaling) -> None:
        self._r = core

    @classmethod
    def from_config(cls, config: ConfigLike, source: Optional[str] = None) -> "RopeScaling":
        """Parses a Hugging Face config (a dict, or the path of a config.json), either format:
        legacy ``rope_theta`` + ``rope_scaling`` or current ``rope_parameters``. Bad values raise
        :class:`ropex.Error` "<source>: <field>: <problem>" (source: the path, else ``source`` or "config")."""
        return cls(_core.RopeScaling.from_config(config, source))

    def with_overrides(self, base: Optional[float] = None,
                       rope_scaling: Optional[Union[dict[str, Any], str]] = None) -> "RopeScaling":
        """A copy at another base and/or with a HF ``rope_scaling`` dict replacing the variant
        (the CLI's ``--rope-base`` / ``--rope-scaling``)."""
        return RopeScaling(self._r.with_overrides(base, rope_scaling))

    @property
    def type(self) -> str:
        """rope type as HF writes it: default, linear, ntk, dynamic, yarn, llama3, longrope"""
        return self._r.type

    @property
    def base(self) -> float:
        """rope_theta"""
        return self._r.base

    @property
    def factor(self) -> float:
        """scaling factor s"""
        return self._r.factor

    @property
    def partial_rotary_factor(self) -> float:
        """rotary dims = int(head_dim * this)"""
        return self._r.partial_rotary_factor

    @property
    def max_position_embeddings(self) -> int:
        return self._r.max_position_embeddings

    @property
    def original_max_position_embeddings(self) -> int:
        """L0 of yarn / llama3 / longrope (0: = max_position_embeddings)"""
        return self._r.original_max_position_embeddings

    @property
    def beta_fast(self) -> float:
        return self._r.beta_fast

    @property
    def beta_slow(self) -> float:
        return self._r.beta_slow

    @property
    def mscale(self) -> float:
        return self._r.mscale

    @property
    def mscale_all_dim(self) -> float:
        return self._r.mscale_all_dim

    @property
    def truncate(self) -> bool:
        return self._r.truncate

    @property
    def attention_factor_override(self) -> float:
        """the config's explicit attention_factor (0: derived)"""
        return self._r.attention_factor_override

    @property
    def low_freq_factor(self) -> float:
        return self._r.low_freq_factor

    @property
    def high_freq_factor(self) -> float:
        return self._r.high_freq_factor

    @property
    def short_factor(self) -> list[float]:
        return list(self._r.short_factor)

    @property
    def long_factor(self) -> list[float]:
        return list(self._r.long_factor)


    def rotary_dim(self, head_dim: int) -> int:
        """Rotated dims of a head: int(head_dim * partial_rotary_factor), as HF truncates."""
        return self._r.rotary_dim(head_dim)

    def original_length(self) -> int:
        """L0 that yarn / llama3 / longrope measure against."""
        return self._r.original_length()

    def inv_freq(self, rotary_dim: int, seq_len: int = 0) -> npt.NDArray[np.float64]:
        """theta_i for i < rotary_dim/2, float64, for a forward over ``seq_len`` tokens (max
        position + 1; only dynamic NTK and LongRoPE depend on it)."""
        return self._r.inv_freq(rotary_dim, seq_len)

    def attention_factor(self, seq_len: int = 0) -> float:
        """The factor cos and sin are multiplied by: yarn mscale 0.1*ln(s)+1 (or its mscale /
        mscale_all_dim ratio), LongRoPE sqrt(1 + ln s / ln L0), else 1."""
        return self._r.attention_factor(seq_len)

    def __repr__(self) -> str:
        return repr(self._r)


def rope_table(inv_freq: npt.ArrayLike, positions: npt.ArrayLike, attention_factor: float = 1.0) -> RopeTable:
    """cos/sin of every (token, pair), float32 ``[len(positions), len(inv_freq)]``:

    cos[t, i] = attention_factor * cos(positions[t] * inv_freq[i]) (and sin), the angle formed and
    reduced to [0, 2*pi) in double before rounding (exact at 1e6+ positions)."""
    f = np.ascontiguousarray(inv_freq, dtype=np.float64)
    p = np.asarray(positions)
    if p.dtype.kind not in "iu":
        raise Error(f"rope_table: positions: expected integers, got dtype {p.dtype}")
    if f.ndim != 1:
        raise Error(f"rope_table: inv_freq: expected a 1-D array, got shape {f.shape}")
    return _core.rope_table(f, np.ascontiguousarray(p.reshape(-1), dtype=np.int64), float(attention_factor))


_LAYOUTS = ("half", "interleaved")


def _elem(x: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], str]:
    """The array the C++ kernel gets (a zero-copy view) and its 16-bit element kind."""
    if x.dtype == np.float32 or x.dtype == np.float64:
        return x, ""
    if x.dtype == np.float16:
        return x.view(np.uint16), "float16"
    if x.dtype.name == "bfloat16":  # ml_dtypes.bfloat16
        return x.view(np.uint16), "bfloat16"
    raise Error(f"apply_rope: x: dtype must be float32, float64, float16 or bfloat16 (ml_dtypes), got {x.dtype}")


def apply_rope(x: npt.NDArray[Any], positions: Optional[npt.ArrayLike] = None, *,
               inv_freq: Optional[npt.ArrayLike] = None, rope: Optional[RopeScaling] = None,
               table: Optional[RopeTable] = None, seq_len: Optional[int] = None,
               attention_factor: Optional[float] = None, layout: str = "half",
               out: Optional[npt.NDArray[Any]] = None, inplace: bool = True) -> npt.NDArray[Any]:
    """Rotates queries or keys: x[..., t, h, :] <- R(positions[t]) x[..., t, h, :] on the first
    r = 2*len(inv_freq) dims of each head (partial rotary leaves the rest). Pair i rotates

    * ``layout="half"`` (NeoX, Hugging Face): dims (i, i + r/2), head = [x0 x1 .. | y0 y1 ..]
    * ``layout="interleaved"`` (GPT-J, Meta, ggml): dims (2i, 2i+1), head = [x0 y0 x1 y1 ..]

    by a' = a*cos - b*sin, b' = a*sin + b*cos with cos/sin from :func:`rope_table`.

    ``x``: float32 / float64 / float16 / bfloat16 (ml_dtypes) numpy array ``[tokens, heads, head_dim]``
    or ``[batch, tokens, heads, head_dim]``, any strides with a unit stride on head_dim.
    Frequencies: ``table=`` (a prebuilt :class:`RopeTable`), else ``positions`` (``[tokens]`` or
    ``[batch, tokens]``) with ``inv_freq=`` or ``rope=`` (a :class:`RopeScaling`, evaluated at
    ``seq_len``, default max(positions)+1, as the model forward does).

    In place by default: the C++ kernel writes into x's own buffer (no copy) and x is returned.
    ``out=`` (same shape and dtype) receives the result instead; ``inplace=False`` returns a new array.
    """
    if not isinstance(x, np.ndarray):
        raise Error(f"apply_rope: x: expected a numpy array, got {type(x).__name__}")
    if layout not in _LAYOUTS:
        raise Error(f"apply_rope: layout: must be \"half\" or \"interleaved\", got {layout!r}")
    if x.ndim not in (3, 4):
        raise Error(f"apply_rope: x: expected shape [tokens, heads, head_dim] or [batch, tokens, heads, head_dim], "
                    f"got shape {x.shape}")
    _elem(x)  # dtype check before any copy
    if out is not None:
        if not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != x.dtype:
            raise Error(f"apply_rope: out: must be a numpy array of x's shape {x.shape} and dtype {x.dtype}")
        if out is not x:
            np.copyto(out, x)
        target = out
    elif inplace:
        target = x
    else:
        target = x.copy()
    if not target.flags.writeable:
        raise Error("apply_rope: x: the array is read-only (pass inplace=False or out=)")
    if table is None:
        if positions is None:
            raise Error("apply_rope: positions: give positions (with inv_freq= or rope=) or table=")
        pos = np.asarray(positions)
        if pos.dtype.kind not in "iu":
            raise Error(f"apply_rope: positions: expected integers, got dtype {pos.dtype}")
        if pos.ndim not in (1, 2):
            raise Error(f"apply_rope: positions: expected shape [tokens] or [batch, tokens], got {pos.shape}")
        if inv_freq is None:
            if rope is None:
                raise Error("apply_rope: inv_freq: give inv_freq= or rope=")
            sl = seq_len if seq_len is not None else (int(pos.max()) + 1 if pos.size else 0)
            inv_freq = rope.inv_freq(rope.rotary_dim(x.shape[-1]), sl)
            if attention_factor is None:
                attention_factor = rope.attention_factor(sl)
        table = rope_table(inv_freq, pos, 1.0 if attention_factor is None else attention_factor)
    elif positions is not None or inv_freq is not None or rope is not None:
        raise Error("apply_rope: table: give either table= or positions with inv_freq=/rope=, not both")
    view, elem = _elem(target)
    _core.apply_rope(view, table, layout, elem)
    return target
