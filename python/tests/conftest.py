"""Shared fixtures: the repository root, the CLI built next to the module (for its JSON and .npy
outputs), model directories made from tests/fixtures, and the llama2.c stories260K checkpoint with a
tokenizer beside it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
# the llama2.c checkpoint of shared/data (ROPEX_STORIES260K where it lies elsewhere: the GPU machine)
STORIES = Path(os.environ.get("ROPEX_STORIES260K", ROOT.parent / "shared" / "data" / "stories260K.bin"))


def _find_cli() -> Path | None:
    env = os.environ.get("ROPEX_CLI")
    if env:
        return Path(env)
    for d in ("build-test", "build-asan", "build-release", "build"):
        p = ROOT / d / "bin" / "ropex"
        if p.exists():
            return p
    return None


@pytest.fixture(scope="session")
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs the ropex CLI (ROPEX_CLI, else build-test/bin/ropex ...); skips when none is built."""
    exe = _find_cli()
    if exe is None or not exe.exists():
        pytest.skip("the ropex CLI is not built (set ROPEX_CLI or build build-test/bin/ropex)")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
        r = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env)
        if check and r.returncode != 0:
            raise AssertionError(f"ropex {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    return run


@pytest.fixture(scope="session")
def cli_json(cli: Callable[..., subprocess.CompletedProcess[str]]) -> Callable[..., Any]:
    return lambda *args: json.loads(cli(*args, "--json").stdout)


@pytest.fixture(scope="session")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A model directory for one variant of tests/fixtures/hf: its config.json + the shared weights."""
    base = tmp_path_factory.mktemp("hf")

    def make(variant: str) -> Path:
        d = base / variant
        if not d.exists():
            d.mkdir()
            shutil.copy(FIXTURES / "hf" / f"{variant}.config.json", d / "config.json")
            shutil.copy(FIXTURES / "hf" / "weights" / "model.safetensors", d / "model.safetensors")
        return d

    return make


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte (the table byte-level BPE vocabularies use)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


@pytest.fixture(scope="module")
def stories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """stories260K.bin beside a byte-level tokenizer.json (tests/stories_model.hpp's, for the CLI tests)."""
    if not STORIES.exists():
        pytest.skip(f"{STORIES} is absent (llama2.c checkpoint from shared/data, or set ROPEX_STORIES260K)")
    d = tmp_path_factory.mktemp("stories")
    (d / "stories260K.bin").write_bytes(STORIES.read_bytes())
    vocab: dict[str, int] = {u: b for b, u in _byte_to_unicode().items()}
    vocab.update({"Ġt": 256, "he": 257, "Ġthe": 258})
    tok = {"added_tokens": [], "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
           "post_processor": None, "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "vocab": vocab, "merges": ["Ġ t", "h e", "Ġt he"]}}
    (d / "tokenizer.json").write_text(json.dumps(tok))
    return d / "stories260K.bin"
