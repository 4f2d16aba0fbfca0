"""ropex.Model: run a LLaMA-family checkpoint (HF directory, GGUF file, llama2.c .bin) on the CPU,
or on an NVIDIA GPU when the module is built with CUDA (``ropex.has_cuda``).

The forward is the C++ ``ropex::model::Llama`` (include/ropex/model/llama.hpp), the evaluation
``ropex::eval::perplexity``: the same code, and so the same numbers, as ``ropex logits`` /
``ropex perplexity`` / ``ropex generate`` (``--device cuda`` for ``device="cuda"``). Long calls
release the GIL; Ctrl-C stops them after the current layer (KeyboardInterrupt); ``progress`` is
called as they go: a callable ``progress(done, total)``, or ``True`` for a tqdm bar.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Sequence
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


@dataclass(frozen=True)
class PasskeyCell:
    """One (length, depth) cell of a passkey grid: ``correct`` of ``trials`` keys retrieved
    (``accuracy``), the mean loss of the answer's tokens given the prompt (``answer_nll``, the
    needle-driven perplexity's log) and the mean prompt length in tokens."""

    length: int
    depth: float
    trials: int
    correct: int
    accuracy: float
    answer_nll: float
    mean_tokens: float


@dataclass(frozen=True)
class PasskeyTrial:
    """One trial: the key hidden at ``needle_token`` of a ``tokens``-token prompt, the model's greedy
    ``answer`` (its first digits), whether it equals the key, and the answer tokens' mean loss."""

    length: int
    depth: float
    trial: int
    key: int
    tokens: int
    needle_token: int
    correct: bool
    answer: str
    answer_tokens: int
    answer_nll: float


@dataclass(frozen=True)
class PasskeyResult:
    """Passkey retrieval over lengths x depths x trials (``ropex passkey``'s cells and trials);
    ``seconds`` in all, ``model_seconds`` / ``model_tokens`` inside the model's forward."""

    cells: list[PasskeyCell]
    trials: list[PasskeyTrial]
    seconds: float
    model_seconds: float
    model_tokens: int


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

    def passkey(self, lengths: Sequence[int] = (1024, 2048, 4096), depths: Sequence[float] = (0, 0.25, 0.5, 0.75, 1),
                trials: int = 5, *, seed: int = 0, progress: Progress = None) -> PasskeyResult:
        """Passkey retrieval (Landmark Attention / PI / YaRN protocol, as ``ropex passkey``): for each
        prompt length (tokens, prompt + answer) and needle depth in [0, 1], ``trials`` keys drawn
        from ``seed``, the filler "The grass is green. ..." around "The pass key is N. Remember it.
        N is the pass key.", greedy answer after "What is the pass key? The pass key is".
        ``progress(trials_done, trials)``."""
        with _reporter(progress, "passkey", "trial") as p:
            cells, tr, secs, model_s, model_tok = self._m.passkey([int(x) for x in lengths], [float(d) for d in depths],
                                                                  int(trials), int(seed), p)
        return PasskeyResult([PasskeyCell(*c) for c in cells], [PasskeyTrial(*t) for t in tr], secs, model_s, model_tok)

    def check(self, text: Union[str, "os.PathLike[str]"], report: Union[str, "os.PathLike[str]"] = "ropex-check", *,
              max_len: Optional[int] = None, windows: Optional[int] = None, short_window: Optional[int] = None,
              train_len: Optional[float] = None, tune_len: Optional[float] = None,
              pretrain_base: Optional[float] = None,
              rope_scaling: Sequence[Union[dict[str, Any], str]] = (), rope_base: Sequence[float] = (),
              passkey_depths: Optional[Sequence[float]] = None, passkey_trials: Optional[int] = None,
              seed: Optional[int] = None, progress: Progress = None) -> dict[str, Any]:
        """``ropex check`` on this model: each theory's predicted context (for the model as loaded,
        each ``rope_base`` and each training-free ``rope_scaling`` variant), the position-driven loss
        rise measured on ``text`` (the same tokens in one long window of ``max_len`` and in short
        windows of ``short_window``; the rule of docs/validation.md section 6) and passkey accuracy
        around each prediction. Writes report.md / report.json / report.html / per_token.csv /
        curve.csv into ``report`` (its partial.jsonl resumes an interrupted run) and returns
        report.json as a dict; every input in it carries its value and origin. Arguments left None
        take the CLI's defaults. ``progress(tokens_done, tokens)``."""
        scalings = [json.dumps(s) if isinstance(s, dict) else str(s) for s in rope_scaling]
        depths = None if passkey_depths is None else [float(d) for d in passkey_depths]
        with _reporter(progress, "check", "tok") as p:
            out = self._m.check(text, report, max_len, windows, short_window, train_len, tune_len, pretrain_base,
                                scalings, [float(b) for b in rope_base], depths, passkey_trials, seed, p)
        result: dict[str, Any] = json.loads(out)
        return result

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


def _model(model: Union[Model, str, "os.PathLike[str]"]) -> Model:
    return model if isinstance(model, Model) else Model(model)


def passkey(model: Union[Model, str, "os.PathLike[str]"], lengths: Sequence[int] = (1024, 2048, 4096),
            depths: Sequence[float] = (0, 0.25, 0.5, 0.75, 1), trials: int = 5, *, seed: int = 0,
            progress: Progress = None) -> PasskeyResult:
    """Passkey retrieval on ``model`` (a ``Model``, or a path opened on the CPU): ``Model.passkey``."""
    return _model(model).passkey(lengths, depths, trials, seed=seed, progress=progress)


def check(model: Union[Model, str, "os.PathLike[str]"], text: Union[str, "os.PathLike[str]"],
          report: Union[str, "os.PathLike[str]"] = "ropex-check", **kwargs: Any) -> dict[str, Any]:
    """``ropex check`` on ``model`` (a ``Model``, or a path opened on the CPU): ``Model.check``."""
    return _model(model).check(text, report, **kwargs)
