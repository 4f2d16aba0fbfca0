"""ropex.passkey / ropex.check (Model.passkey / Model.check) against the CLI's `ropex passkey` and
`ropex check` (the same C++ evaluation): equal cells, trials, predictions, measured rise and
curves; inputs named as Python arguments; errors; the model's rope restored after a check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

import ropex
from conftest import FIXTURES

TEXT = FIXTURES / "gguf_cli" / "gpl3_apache2.txt"
GRID = dict(lengths=[256, 512], depths=[0.0, 1.0], trials=2, seed=7)


def test_passkey_equals_cli(cli_json: Callable[..., Any], stories: Path) -> None:
    ref = cli_json("passkey", "--model", str(stories), "--lengths", "256,512", "--depths", "0,1", "--trials", "2",
                   "--seed", "7", "--quiet")
    calls: list[tuple[int, int]] = []
    r = ropex.Model(stories).passkey(**GRID, progress=lambda d, t: calls.append((d, t)))  # type: ignore[arg-type]
    assert calls == [(i, 8) for i in range(1, 9)]
    assert len(r.cells) == len(ref["cells"]) == 4 and len(r.trials) == len(ref["trials"]) == 8
    for c, rc in zip(r.cells, ref["cells"]):
        assert (c.length, c.depth, c.trials, c.correct) == (rc["length"], rc["depth"], rc["trials"], rc["correct"])
        assert c.accuracy == rc["accuracy"] and c.mean_tokens == rc["mean_tokens"]
        # same code; the CLI's build (RelWithDebInfo / ASan in CI) and the module's round differently
        assert c.answer_nll == pytest.approx(rc["answer_nll"], abs=1e-5)
    for t, rt in zip(r.trials, ref["trials"]):
        assert (t.length, t.trial, t.key, t.tokens, t.needle_token, t.answer, t.correct, t.answer_tokens) == (
            rt["length"], rt["trial"], rt["key"], rt["tokens"], rt["needle_token"], rt["answer"], rt["correct"],
            rt["answer_tokens"])
        assert t.tokens <= t.length
    assert r.model_tokens > 0 and 0 < r.model_seconds <= r.seconds
    # the module-level function, on a path: a cell's keys depend on (seed, length, depth, trial) only
    again = ropex.passkey(stories, lengths=[256], depths=[0.0], trials=2, seed=7)
    assert [t.key for t in again.trials] == [t.key for t in r.trials[:2]]
    assert again.cells[0].correct == r.cells[0].correct


def test_passkey_errors(stories: Path) -> None:
    m = ropex.Model(stories)
    with pytest.raises(ropex.Error, match=r"^passkey: depths: each must lie in \[0, 1\], got 2"):
        m.passkey([256], [2.0], 1)
    with pytest.raises(ropex.Error, match=r"^passkey: lengths: each must lie in \[16, 2\^24\], got 8"):
        m.passkey([8], [0.0], 1)
    with pytest.raises(ropex.Error, match=r"^passkey: trials: must be >= 1, got 0"):
        m.passkey([256], [0.0], 0)


def _strip_origins(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v["value"] for k, v in inputs.items()}


def test_check_equals_cli(cli_json: Callable[..., Any], stories: Path, tmp_path: Path) -> None:
    ref = cli_json("check", "--model", str(stories), "--text", str(TEXT), "--max-len", "1024", "--passkey-depths", "0,1",
                   "--passkey-trials", "1", "--rope-base", "500", "--threads", "1", "--quiet", "--report",
                   str(tmp_path / "cli"))
    m = ropex.Model(stories)
    seen: list[tuple[int, int]] = []
    got = m.check(TEXT, tmp_path / "py", max_len=1024, passkey_depths=[0, 1], passkey_trials=1, rope_base=[500],
                  progress=lambda d, t: seen.append((d, t)))
    for f in ("report.json", "report.md", "report.html", "per_token.csv", "curve.csv", "partial.jsonl"):
        assert (tmp_path / "py" / f).exists(), f
    assert json.loads((tmp_path / "py" / "report.json").read_text()) == got
    assert seen and seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    # inputs: the same values; origins name Python arguments where the CLI names flags
    a, b = _strip_origins(got["inputs"]), _strip_origins(ref["inputs"])
    for k in ("model", "text"):
        a.pop(k), b.pop(k)
    assert a.pop("dtype") == "f32"
    assert a == b
    assert got["inputs"]["max_len"]["origin"] == "argument max_len"
    assert ref["inputs"]["max_len"]["origin"] == "flag --max-len"
    assert got["inputs"]["passkey_trials"]["origin"] == "argument passkey_trials"
    assert got["inputs"]["seed"]["origin"] == "default 0"
    assert "rope_theta" in got["inputs"]["base"]["origin"]
    # the measurements: predictions and passkey equal, losses to the builds' rounding
    assert len(got["settings"]) == len(ref["settings"]) == 2
    for s, r in zip(got["settings"], ref["settings"]):
        assert s["label"] == r["label"] and s["predictions"] == r["predictions"]
        assert s["passkey"]["lengths"] == r["passkey"]["lengths"]
        assert [c["correct"] for c in s["passkey"]["cells"]] == [c["correct"] for c in r["passkey"]["cells"]]
        assert s["rise"]["margin_0.50"] == r["rise"]["margin_0.50"]
        for x, y in zip(s["curve"], r["curve"]):
            assert (x["begin"], x["end"]) == (y["begin"], y["end"])
            assert x["mean_long"] == pytest.approx(y["mean_long"], abs=1e-5)
            assert x["mean_short"] == pytest.approx(y["mean_short"], abs=1e-5)
    assert got["time"]["units_computed"] > 0 and got["time"]["model_tokens"] > 0
    # the model keeps its own rope after a sweep of bases
    assert m.rope.base == 10000.0
    # resumed: nothing recomputed, the same report
    again = m.check(TEXT, tmp_path / "py", max_len=1024, passkey_depths=[0, 1], passkey_trials=1, rope_base=[500])
    assert again["time"]["units_computed"] == 0 and again["settings"] == got["settings"]


def test_check_inputs_and_errors(stories: Path, tmp_path: Path) -> None:
    m = ropex.Model(stories, rope_base=2e4)
    r = m.check(TEXT, tmp_path / "a", max_len=600, passkey_trials=0, short_window=256)
    assert r["inputs"]["base"] == {"value": 2e4, "origin": "Model(rope_base=...)"}
    assert r["inputs"]["short_window"]["origin"] == "argument short_window"
    assert r["settings"][0]["passkey"]["lengths"] == []
    with pytest.raises(ropex.Error, match=r"^windows: must be >= 1, got 0"):
        m.check(TEXT, tmp_path / "b", windows=0)
    with pytest.raises(ropex.Error, match=r"^passkey_depths: each must lie in \[0, 1\]"):
        m.check(TEXT, tmp_path / "c", max_len=600, passkey_depths=[1.5])
    with pytest.raises(ropex.Error, match=r"^text: .*: has \d+ tokens, fewer than max_len x windows"):
        m.check(TEXT, tmp_path / "d", max_len=600, windows=1000)
    with pytest.raises(ropex.Error, match=r"rope_scaling\[0\]"):
        m.check(TEXT, tmp_path / "e", max_len=600, rope_scaling=['{"rope_type": "yarn"'])

    # a check interrupted in its second setting (the progress callback raises there) leaves the
    # model's rope as it was
    def stop(done: int, total: int) -> None:
        if done > total // 2:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        m.check(TEXT, tmp_path / "f", max_len=600, passkey_trials=0, rope_base=[1e6], progress=stop)
    assert m.rope.base == 2e4
