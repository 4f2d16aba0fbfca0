"""ropex.Model against the CLI (same C++ forward) and the HF fixtures: logits, nll, perplexity,
generate, every checkpoint format; errors, CUDA refusal, progress and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import ropex
from conftest import FIXTURES, ROOT, STORIES

TOKENS = np.load(FIXTURES / "hf" / "tokens.npy")
GGUF = ROOT / ".models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _stories() -> ropex.Model:
    if not STORIES.exists():
        pytest.skip(f"{STORIES} is absent (llama2.c checkpoint from shared/data)")
    return ropex.Model(STORIES)


@pytest.mark.parametrize("variant", ["default", "base500", "linear", "dynamic", "yarn", "llama3", "longrope"])
def test_logits_match_hf_fixture(hf_model: Callable[[str], Path], variant: str) -> None:
    m = ropex.Model(hf_model(variant))
    assert m.format == "safetensors" and m.device == "cpu"
    lg = m.logits(TOKENS)
    ref = np.load(FIXTURES / "hf" / f"{variant}.logits.npy")
    assert lg.dtype == np.float32 and lg.shape == ref.shape
    assert np.abs(lg - ref).max() <= 1e-3


def test_logits_equal_cli(cli: Callable[..., Any], hf_model: Callable[[str], Path], tmp_path: Path) -> None:
    d = hf_model("default")
    out = tmp_path / "logits.npy"
    cli("logits", "--model", str(d), "--tokens", str(FIXTURES / "hf" / "tokens.npy"), "--out", str(out),
        "--rope-base", "500")
    lg = ropex.Model(d, rope_base=500).logits(TOKENS.tolist())
    # same code; the CLI's build (RelWithDebInfo / ASan in CI) and the module's (Release) round differently
    np.testing.assert_allclose(lg, np.load(out), rtol=0, atol=2e-5)
    assert np.abs(lg - np.load(FIXTURES / "hf" / "base500.logits.npy")).max() <= 1e-3
    lin = ropex.Model(d, rope_scaling={"rope_type": "linear", "factor": 4})
    assert lin.rope.type == "linear"
    assert np.abs(lin.logits(TOKENS) - np.load(FIXTURES / "hf" / "linear.logits.npy")).max() <= 1e-3


def test_nll_and_perplexity_equal_cli(cli_json: Callable[..., Any], hf_model: Callable[[str], Path]) -> None:
    d = hf_model("default")
    m = ropex.Model(d)
    lg = m.logits(TOKENS).astype(np.float64)
    lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
    want = lse[:-1] - lg[np.arange(len(TOKENS) - 1), TOKENS[1:]]
    np.testing.assert_allclose(m.nll(TOKENS), want, rtol=1e-6, atol=1e-6)
    seen: list[tuple[int, int]] = []
    r = m.perplexity(TOKENS, context=16, stride=8, bins=4, progress=lambda a, b: seen.append((a, b)))
    j = cli_json("perplexity", "--model", str(d), "--tokens", str(FIXTURES / "hf" / "tokens.npy"), "--context", "16",
                 "--stride", "8", "--bins", "4")
    assert (r.tokens, r.context, r.stride, r.windows) == (j["tokens"], j["context"], j["stride"], j["windows"])
    assert r.perplexity == pytest.approx(j["perplexity"], rel=1e-6)
    assert r.mean_nll == pytest.approx(j["mean_nll"], rel=1e-6)
    assert [(b.begin, b.end, b.count) for b in r.curve] == [(c["begin"], c["end"], c["count"]) for c in j["curve"]]
    np.testing.assert_allclose([b.mean_nll for b in r.curve], [c["mean_nll"] for c in j["curve"]], rtol=1e-6)
    assert r.position_nll.shape == (16,) and int(r.position_count.sum()) == r.tokens
    assert seen and seen[-1] == (len(TOKENS) - 1, len(TOKENS) - 1)
    full = m.perplexity(TOKENS)  # one window: the mean of nll()
    assert full.mean_nll == pytest.approx(float(m.nll(TOKENS).mean()), rel=1e-6)  # layer-streamed cache


def test_stories260k_generate_equals_cli(cli_json: Callable[..., Any]) -> None:
    m = _stories()
    assert m.format == "llama2.c" and m.config["rope_layout"] == "interleaved"
    got = m.generate(steps=16)
    assert got == cli_json("generate", "--model", str(STORIES), "--steps", "16", "--temperature", "0")["tokens"]
    assert got == [461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299, 362, 409, 283, 264]  # README
    sampled = m.generate([1, 461], steps=8, temperature=0.8, seed=7)
    ids = [str(t) for t in [1, 461]]
    # the CLI reads prompt ids from a file
    p = Path(os.environ.get("TMPDIR", "/tmp")) / f"ropex-py-prompt-{os.getpid()}.txt"
    p.write_text(" ".join(ids))
    try:
        j = cli_json("generate", "--model", str(STORIES), "--prompt-tokens", str(p), "--steps", "8",
                     "--temperature", "0.8", "--seed", "7")
    finally:
        p.unlink()
    assert sampled == j["tokens"]


def test_gguf_logits_equal_cli(cli: Callable[..., Any], tmp_path: Path) -> None:
    if not GGUF.exists():
        pytest.skip(f"{GGUF} is absent (scripts/fetch_models.sh fetches it)")
    m = ropex.Model(GGUF, threads=2)
    assert m.format == "gguf"
    ids = np.array([1, 504, 3458, 314, 253, 1345], dtype=np.int64)
    np.save(tmp_path / "ids.npy", ids.astype(np.int32))
    cli("logits", "--model", str(GGUF), "--tokens", str(tmp_path / "ids.npy"), "--out", str(tmp_path / "l.npy"))
    np.testing.assert_allclose(m.logits(ids), np.load(tmp_path / "l.npy"), atol=1e-4)


def test_errors(cli: Callable[..., Any], hf_model: Callable[[str], Path]) -> None:
    r = cli("logits", "--model", "/nonexistent/model", "--tokens", "x", "--out", "y", check=False)
    with pytest.raises(ropex.Error) as e:
        ropex.Model("/nonexistent/model")
    # the CLI's --model also tries the name as a preset and says so after the same message
    assert str(e.value) == "/nonexistent/model: no such file or directory"
    assert str(e.value) + ", and not a preset" in r.stderr
    m = ropex.Model(hf_model("default"))
    with pytest.raises(ropex.Error, match=r"^ids: \[2\]: id 256 is outside the vocabulary \[0, 256\)"):
        m.logits([1, 2, 256])
    with pytest.raises(ropex.Error, match="ids: expected integer token ids"):
        m.logits(np.array([1.0, 2.0]))
    with pytest.raises(ropex.Error, match="ids: expected a 1-D sequence"):
        m.logits(np.zeros((2, 2), np.int64))
    with pytest.raises(ropex.Error, match="perplexity: stride: must be <= context"):
        m.perplexity(TOKENS, context=8, stride=9)
    with pytest.raises(ropex.Error, match="^--rope-base: base must be a finite number > 1"):
        ropex.Model(hf_model("default"), rope_base=0.5)
    with pytest.raises(ropex.Error, match='device: must be "cpu" or "cuda"'):
        ropex.Model(hf_model("default"), device="tpu")
    if not ropex.has_cuda:
        with pytest.raises(ropex.Error, match="device: cuda: this ropex module was built without CUDA"):
            ropex.Model(hf_model("default"), device="cuda")
    with pytest.raises(ropex.Error, match='dtype: the CPU forward runs in "f32" only, got "bf16"'):
        ropex.Model(hf_model("default"), dtype="bf16")


def test_progress_callback_errors_propagate(hf_model: Callable[[str], Path]) -> None:
    m = ropex.Model(hf_model("default"))
    layers: list[tuple[int, int]] = []
    m.logits(TOKENS, progress=lambda a, b: layers.append((a, b)))
    assert layers == [(1, 2), (2, 2)]

    def boom(a: int, b: int) -> None:
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        m.logits(TOKENS, progress=boom)
    assert m.logits(TOKENS[:4]).shape == (4, 256)  # the model is usable afterwards


@pytest.fixture
def python_sigint_handler() -> Iterator[None]:
    """Python's KeyboardInterrupt handler for SIGINT during the test, whatever the runner inherited
    (a job started with & by a non-interactive shell has SIGINT ignored)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def test_ctrl_c_interrupts_a_long_call(python_sigint_handler: None) -> None:
    m = _stories()
    ids = np.random.default_rng(0).integers(0, m.config["vocab_size"], 60000)
    n_windows = (len(ids) - 1 + 255) // 256
    windows: list[int] = []

    def ctrl_c_once_running() -> None:  # SIGINT from another thread while the C++ call runs
        deadline = time.monotonic() + 20
        while len(windows) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_running, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        m.perplexity(ids, context=256, progress=lambda a, b: windows.append(a))
        time.sleep(30)  # only reached when the call finished before the signal
    assert 2 <= len(windows) < n_windows, "the interrupt stopped the C++ call between layers/windows"
    assert m.perplexity(ids[:600], context=300).tokens == 598  # usable afterwards (2 windows of 299 targets)


LONG_CALLS = {
    "perplexity": lambda m, ids, p: m.perplexity(ids, context=256, progress=p),
    "logits": lambda m, ids, p: m.logits(ids[:3000], progress=p),
    "generate": lambda m, ids, p: m.generate(ids[:8], steps=3000, progress=p),
}


@pytest.mark.parametrize("call", LONG_CALLS)
def test_gil_released_during_long_calls(call: str) -> None:
    # A Python thread keeps running while the C++ call works: its ticks fill the call's span with
    # no gap near the call's length (a call holding the GIL would stop them from start to end).
    # One C++ thread, and a ticking thread that sleeps between ticks: no core is oversubscribed
    # and the per-layer check-ins get the GIL at once.
    if not STORIES.exists():
        pytest.skip(f"{STORIES} is absent")
    m = ropex.Model(STORIES, threads=1)
    ids = np.random.default_rng(0).integers(0, m.config["vocab_size"], 30000)
    span: list[float] = []

    def work() -> None:
        span.append(time.perf_counter())
        LONG_CALLS[call](m, ids, None)
        span.append(time.perf_counter())

    th = threading.Thread(target=work)
    ticks: list[float] = []
    th.start()
    while th.is_alive():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    th.join()
    t0, t1 = span
    inside = np.array([t for t in ticks if t0 <= t <= t1])
    assert t1 - t0 >= 0.1, f"{call} took {t1 - t0:.3f} s: too short to show anything"
    assert len(inside) >= 10
    gaps = np.diff(np.concatenate([[t0], inside, [t1]]))
    assert gaps.max() < 0.5 * (t1 - t0), f"longest stall of the Python thread {gaps.max():.3f} s of {t1 - t0:.3f} s"


_CTRL_C_CHILD = """
import signal, sys, numpy as np, ropex
# Python's own SIGINT handler even where the parent left SIGINT ignored (a job started with & by a
# non-interactive shell inherits SIG_IGN, and Python then installs no handler at all).
signal.signal(signal.SIGINT, signal.default_int_handler)
m = ropex.Model(sys.argv[1])
ids = np.random.default_rng(0).integers(0, m.config["vocab_size"], 200000)
def progress(done, total):
    if done == 255:
        print("running", flush=True)
try:
    m.perplexity(ids, context=256, progress=progress)
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", m.perplexity(ids[:600], context=300).tokens, flush=True)
    if sys.argv[2] == "reraise":
        raise
"""


@pytest.mark.parametrize("mode", ["caught", "reraise"])
def test_sigint_to_a_process_in_a_long_perplexity(mode: str) -> None:
    # A real Ctrl-C: SIGINT to a process busy in the C++ call. KeyboardInterrupt is raised in it
    # (the model still works after), and uncaught it ends the process the way Python does, no crash.
    if not STORIES.exists():
        pytest.skip(f"{STORIES} is absent")
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_CTRL_C_CHILD), str(STORIES), mode],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "running"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert out.strip() == "interrupted 598", err
    if mode == "caught":
        assert child.returncode == 0, err
    else:  # Python's exit for an uncaught KeyboardInterrupt: killed by SIGINT, traceback printed
        assert child.returncode == -signal.SIGINT and err.rstrip().endswith("KeyboardInterrupt"), err


def test_progress_to_tqdm(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    m = _stories()
    ids = np.arange(1, 1025) % m.config["vocab_size"]
    want = m.perplexity(ids, context=256).perplexity
    same = pytest.approx(want, rel=1e-6)  # OpenMP reductions: not bit-equal from run to run
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.perplexity(ids, context=256, progress=False).perplexity == same
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "tqdm.auto", None)  # as if tqdm were not installed
        with pytest.warns(UserWarning, match="tqdm is not installed"):
            assert m.perplexity(ids, context=256, progress=True).perplexity == same
    pytest.importorskip("tqdm.auto")
    capsys.readouterr()
    assert m.perplexity(ids, context=256, progress=True).perplexity == same
    err = capsys.readouterr().err
    assert "perplexity" in err and "1020/1020" in err  # the bar ends at the targets scored (4 windows of 255)
    m.logits(ids[:16], progress=True)
    layers = m.config["num_hidden_layers"]
    assert f"{layers}/{layers}" in capsys.readouterr().err


def test_tokenize_with_the_facade(tmp_path: Path) -> None:
    tj = FIXTURES / "families" / "smollm2"
    tok_dir = ROOT / ".models" / "tokenizers"
    cand = [p for p in [tj / "tokenizer.json", *sorted(tok_dir.glob("*/tokenizer.json"))] if p.exists()]
    if not cand:
        pytest.skip("no tokenizer.json next to a fixture model (scripts/fetch_tokenizers.sh fetches them)")
    d = tmp_path / "m"
    d.mkdir()
    for f in (FIXTURES / "hf" / "default.config.json", FIXTURES / "hf" / "weights" / "model.safetensors"):
        (d / ("config.json" if f.suffix == ".json" else f.name)).symlink_to(f)
    (d / "tokenizer.json").symlink_to(cand[0])
    m = ropex.Model(d)
    ids = m.tokenize("Hello world, hello RoPE.")
    assert ids and all(isinstance(i, int) for i in ids)
    assert m.detokenize(ids) == "Hello world, hello RoPE."
