"""Shared fixtures: the repository root, the CLI built next to the module (for its JSON and .npy
outputs), and model directories made from tests/fixtures."""

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
