"""ropex.Model: run a LLaMA-family checkpoint (HF directory, GGUF file, llama2.c .bin) on the CPU,
or on an NVIDIA GPU when the module is built with CUDA (``ropex.has_cuda``).

The forward is the C++ ``ropex::model::Llama`` (include/ropex/model/llama.hpp), the evaluation
``ropex::eval::perplexity``: the same code, and so the same numbers, as ``ropex logits`` /
``ropex perplexity`` / ``ropex generate`` (``--device cuda`` for ``device="cuda"``). Long calls
release the GIL; Ctrl-C stops them after the current layer (KeyboardInterrupt); ``progress`` is
called as they go: a callable ``progress(done, total)``, or ``True`` for a tqdm bar.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._rope import RopeScaling

Error = _core.Error
#: ``progress(done, total)``, ``True`` (a tqdm bar when tqdm is installed) or None.
Progress = Union[Callable[[int, int], object], bool, None]


@contextmanager
def _reporter(progress: Progress, desc: str, unit: str) -> Iterator[Optional[Callable[[int, int], object]]]:
    """The callback the C++ side calls: the user's own, or one that drives a tqdm bar (closed after)."""
    if progress is None or progress is False:
        yield None
        return
    if callable(progress):
        yield progress
        return
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        warnings.warn("progress=True: tqdm is not installed (pip install tqdm); no progress shown", stacklevel=3)
        yield None
        return
    bar = tqdm(desc=desc, unit=unit)
    done_before = 0

    def update(done: int, total: int) -> None:
        nonlocal done_before
        if bar.total != total:
            bar.total = total
        bar.update(done - done_before)
        done_before = done

    try:
        yield update
    finally:
        bar.close()


def _ids(ids: npt.ArrayLike, name: str = "ids") -> npt.NDArray[np.int64]:
    a = np.asarray(ids)
    if a.ndim != 1:
        raise Error(f"{name}: expected a 1-D sequence of token ids, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise Error(f"{name}: expected integer token ids, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


@dataclass(frozen=True)
class PositionBin:
    """Mean loss of the targets whose position within their window lies in [begin, end)."""

    begin: int
    end: int
    count: int
    mean_nll: float


@dataclass(frozen=True)
class PerplexityResult:
    """Long-context perplexity with the per-position loss curve (C++ ``ropex::eval::PerplexityResult``).

    * ``perplexity`` = exp(``mean_nll``), the mean over ``tokens`` scored targets
    * ``context``, ``stride``, ``windows``: the windows evaluated (window w covers tokens
      [w*stride, w*stride + context), each target scored once)
    * ``position_nll``: ``[min(context, len(ids))]`` mean loss of the targets at each position inside
      the window (NaN where none was scored; positions past the input are never reached): the curve
      where a model that fails to extrapolate blows up
    * ``position_count``, ``position_nll_sum``: its counts and sums
    * ``curve``: the same binned into ``bins`` equal ranges
    """

    perplexity: float
    mean_nll: float
    tokens: int
    context: int
    stride: int
    windows: int
    position_nll: npt.NDArray[np.float64]
    position_count: npt.NDArray[np.int64]
    position_nll_sum: npt.NDArray[np.float64]
    curve: list[PositionBin]


class Model:
    """A checkpoint ropex loads, ready to run.

    ``path``: a Hugging Face model directory (config.json + safetensors, sharded or not), a GGUF
    file or a llama2.c ``.bin``. ``rope_base`` / ``rope_scaling`` (a HF ``rope_scaling`` dict or its
    JSON) evaluate it at another base or scaling without editing files. ``device``: "cpu", or
    "cuda" when ``ropex.has_cuda`` (the module built with ``-C cmake.define.ROPEX_CUDA=ON``): the
    CLI's ``--device cuda`` forward. ``dtype``: "f32" on the CPU; "bf16" (default: weights,
    activations and KV cache in bfloat16) or "f32" on cuda, as the CLI's ``--dtype``.
    ``threads``: CPU threads (default: all).
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], device: str = "cpu", *, dtype: Optional[str] = None,
                 rope_base: Optional[float] = None, rope_scaling: Optional[Union[dict[str, Any], str]] = None,
                 threads: Optional[int] = None) -> None:
        self._m = _core.Model(path, device, dtype, rope_base, rope_scaling, threads or 0)

    @property
    def config(self) -> dict[str, Any]:
        """The model's shape and ids: vocab_size, hidden_size, num_hidden_layers, head_dim, rotary_dim, ..."""
        return self._m.config

    @property
    def rope(self) -> RopeScaling:
        """The RoPE settings the forward uses (the checkpoint's, with any override applied)."""
        return RopeScaling(self._m.rope)

    @property
    def format(self) -> str:
        """"safetensors", "gguf" or "llama2.c"."""
        return self._m.format

    @property
    def path(self) -> str:
        return self._m.path

    @property
    def device(self) -> str:
        return self._m.device

    @property
    def dtype(self) -> str:
        """"f32" or "bf16": the precision the forward runs in."""
        return self._m.dtype

    def logits(self, ids: npt.ArrayLike, *, progress: Progress = None) -> npt.NDArray[np.float32]:
        """float32 logits ``[len(ids), vocab]`` of one causal forward over ``ids`` from position 0.
        ``progress(layers_done, layers)``."""
        with _reporter(progress, "logits", "layer") as p:
            return self._m.logits(_ids(ids), p)

    def nll(self, ids: npt.ArrayLike, *, progress: Progress = None) -> npt.NDArray[np.float64]:
        """``[len(ids)-1]``: -log softmax(logits[i])[ids[i+1]], the loss of each next token given
        all before it (one forward). ``progress(layers_done, layers)``."""
        with _reporter(progress, "nll", "layer") as p:
            return self._m.nll(_ids(ids), p)

    def perplexity(self, ids: npt.ArrayLike, context: Optional[int] = None, stride: Optional[int] = None, *,
                   bins: int = 32, bos_windows: bool = False, progress: Progress = None) -> PerplexityResult:
        """Perplexity over windows of ``context`` tokens (default: all of ids) moved by ``stride``
        (default: context), each target scored once (HF's strided recipe), with the per-position
        loss. perplexity = exp(mean NLL). ``bos_windows``: windows after the first start with BOS.
        ``progress(tokens_scored, tokens)`` after each window."""
        a = _ids(ids)
        with _reporter(progress, "perplexity", "tok") as p:
            r = self._m.perplexity(a, int(len(a) if context is None else context), int(stride or 0), bins,
                                   bos_windows, p)
        count = np.asarray(r.position_count)
        sums = np.asarray(r.position_nll_sum)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, sums / np.maximum(count, 1), np.nan)
        return PerplexityResult(r.perplexity, r.mean_nll, r.tokens, r.context, r.stride, r.windows, mean, count, sums,
                                [PositionBin(*b) for b in r.curve])

    def generate(self, prompt: Optional[npt.ArrayLike] = None, steps: int = 16, *, temperature: float = 0.0,
                 seed: int = 0, stop_at_eos: bool = False, progress: Progress = None) -> list[int]:
        """Continues ``prompt`` (token ids; default: BOS) by ``steps`` tokens with the KV cache:
        greedy at temperature 0, else drawn from softmax(logits / temperature) (the CLI's sampler:
        same seed, same tokens). ``stop_at_eos`` stops after any of the config's eos ids.
        Returns the new ids. ``progress(tokens_done, steps)``."""
        p = None if prompt is None else _ids(prompt, "prompt")
        with _reporter(progress, "generate", "tok") as cb:
            return self._m.generate(p, steps, temperature, seed, stop_at_eos, cb)

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Text to ids with the model directory's tokenizer.json (byte-level BPE) or tokenizer.model
        (SentencePiece); ``add_special_tokens`` puts the tokenizer's own prefix (BOS) first."""
        return self._m.tokenize(text, add_special_tokens)

    def detokenize(self, ids: npt.ArrayLike, skip_special: bool = False) -> str:
        """Ids back to text with the same tokenizer."""
        return self._m.detokenize([int(i) for i in _ids(ids)], skip_special)

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({self.path!r}, format={self.format!r}, layers={c['num_hidden_layers']}, "
                f"hidden={c['hidden_size']}, vocab={c['vocab_size']}, rope={self.rope!r})")
