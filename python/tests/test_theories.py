"""The theories from Python (Men et al.'s bound and its inverse, cut-points, numeric bounds, the
slowest pair's period) against ``ropex theories --json`` (the same C++), their own identities, and
the vectorized forms against element-wise calls."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import pytest

import ropex
from conftest import FIXTURES


def _rows(j: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["theory"]: r for r in j["theories"]}


def _value(j: dict[str, Any], key: str) -> Any:
    return j["inputs"][key]["value"]


# (CLI arguments, Men target small enough to solve in well under a second)
CASES = [
    ["--head-dim", "128", "--train-len", "4096", "--base", "500000", "--target", "8192"],
    ["--head-dim", "64", "--train-len", "2048", "--base", "10000", "--tune-len", "4096", "--target", "3000",
     "--tolerance", "0.003", "--p", "0.25"],
    ["--config", str(FIXTURES / "configs" / "pythia-160m"), "--train-len", "2048", "--target", "4096"],
]


@pytest.mark.parametrize("args", CASES, ids=["llama2-base5e5", "d64-tuned", "pythia-partial-rotary"])
def test_equal_cli(cli_json: Callable[..., Any], args: list[str]) -> None:
    j = cli_json("theories", *args)
    rows = _rows(j)
    d, base, T = _value(j, "head_dim"), float(_value(j, "base")), float(_value(j, "train_len"))
    sp, target, pb = _value(j, "static_pairs"), _value(j, "target"), float(_value(j, "pretrain_base"))
    tol = float(args[args.index("--tolerance") + 1]) if "--tolerance" in args else 1e-2
    p = float(args[args.index("--p") + 1]) if "--p" in args else 0.75

    men = rows["men_discrimination_bound"]
    length = ropex.men_context_length(d, base, static_pairs=sp)
    assert length.cap == j["men_solver"]["scan_cap"] == ropex.MEN_SCAN_CAP
    assert length.bounded == j["men_solver"]["bounded"]
    assert (length.length if length.bounded else None) == men["supported_context"]
    mb = ropex.men_base_for_context(d, target, static_pairs=sp)
    assert mb.base == men["base_for_target"]
    assert mb.infeasible_below == j["men_solver"]["base_infeasible_below"]
    assert mb.witness == j["men_solver"]["witness_distance"]
    assert (mb.bases_tried, mb.full_scans) == (j["men_solver"]["bases_tried"], j["men_solver"]["full_scans"])
    assert mb.target == target  # the last scan's step: the fine one once the coarse grid found a base
    assert mb.grid_step == j["men_solver"]["fine_step" if mb.bases_tried > 1 else "grid_step"]

    slow = rows["slowest_pair_period"]
    assert ropex.slowest_period(d, base) == slow["supported_context"]
    assert ropex.base_for_slowest_period(d, target) == slow["base_for_target"]

    for name in ("bf16", "fp16", "fp32"):
        nb = ropex.numeric_bounds(name, tol)
        assert nb.exact_positions == rows[f"{name}_exact_positions"]["supported_context"]
        assert nb.angle_error_position == rows[f"{name}_angle_error"]["supported_context"]
        assert nb.dtype == name and nb.tolerance == tol

    c = ropex.cut_points(d, base, T, pretrain_base=pb, p=p)
    cj = j["cut_points"]
    assert (c.yarn_low, c.yarn_high) == (cj["yarn"]["low"], cj["yarn"]["high"])
    assert (c.yarn_low_fractional, c.yarn_high_fractional) == (cj["yarn"]["low_fractional"], cj["yarn"]["high_fractional"])
    assert (c.yarn_fast_period, c.yarn_slow_period) == (cj["yarn"]["fast_period"], cj["yarn"]["slow_period"])
    assert (c.llama3_high_freq_wavelen, c.llama3_low_freq_wavelen) == (cj["llama3"]["high_freq_wavelen"],
                                                                       cj["llama3"]["low_freq_wavelen"])
    assert (c.llama3_pairs_kept, c.llama3_pairs_scaled) == (cj["llama3"]["pairs_kept"], cj["llama3"]["pairs_scaled"])
    assert c.hope_pairs_kept == cj["hope"]["pairs_kept"]
    assert (c.p_rope_p, c.p_rope_pairs_kept) == (cj["p_rope"]["p"], cj["p_rope"]["pairs_kept"])
    assert c.liu_critical_pairs == cj["liu"]["critical_pairs"]


def test_partial_rotary_config_has_static_pairs(cli_json: Callable[..., Any]) -> None:
    # pythia-160m rotates 16 of 64 dims per head: 24 static pairs, which keep B_m >= 0 for longer
    j = cli_json("theories", "--config", str(FIXTURES / "configs" / "pythia-160m"), "--train-len", "2048")
    d, sp, base = _value(j, "head_dim"), _value(j, "static_pairs"), float(_value(j, "base"))
    assert (d, sp) == (16, 24)
    assert ropex.men_sum(d, base, 0, static_pairs=sp) == d // 2 + sp
    assert not ropex.men_context_length(d, base, static_pairs=sp).bounded  # 24 static >= 8 rotating
    assert ropex.men_context_length(d, base, cap=100000).bounded


def test_identities() -> None:
    # Men et al. eq. 9-11: B_m >= 0 on every distance below the length, negative at it.
    r = ropex.men_context_length(128, 10000)
    assert r.bounded and r.value_at_length < 0 and r.value_at_length == ropex.men_sum(128, 10000, r.length)
    below = ropex.men_sum(128, 10000, np.arange(r.length))
    assert below.shape == (r.length,) and below.min() >= 0
    assert ropex.men_sum(128, 10000, 0) == 64.0
    # the solver's answer supports the target; the bracket's lower end is refuted by its witness
    mb = ropex.men_base_for_context(128, 4096)
    assert ropex.men_context_length(128, mb.base, cap=4096).length == 4096
    assert ropex.men_sum(128, mb.infeasible_below, mb.witness) < 0 and mb.witness < 4096
    assert mb.infeasible_below < mb.base <= mb.infeasible_below * (1 + 1e-11)
    # slowest period and its inverse; numeric bounds' closed forms (theories.hpp static_asserts)
    assert ropex.slowest_period(128, ropex.base_for_slowest_period(128, 65536)) == pytest.approx(65536, rel=1e-12)
    assert ropex.slowest_period(128, 10000) == pytest.approx(2 * np.pi * 10000 ** (126 / 128), rel=1e-13)
    assert [ropex.numeric_bounds(t).exact_positions for t in ("bf16", "fp16", "fp32")] == [256, 2048, 2**24]
    assert ropex.numeric_bounds(np.float32).angle_error_position == 262144
    assert ropex.numeric_bounds("bf16").angle_error_position == 4
    assert ropex.numeric_bounds(np.float16).precision == 11
    c = ropex.cut_points(128, 10000, 4096)
    assert c.p_rope_pairs_kept == 48 and c.liu_critical_pairs == ropex.critical_dimension(128, 4096) // 2 == 46


def test_vectorized_equals_elementwise() -> None:
    bases = np.array([500.0, 1e4, 5e5, 1e6])
    v = ropex.men_context_length(64, bases, cap=1 << 20)
    assert isinstance(v.length, np.ndarray) and v.length.shape == (4,) and v.bounded.dtype == np.bool_
    for i, b in enumerate(bases):
        s = ropex.men_context_length(64, float(b), cap=1 << 20)
        assert isinstance(s.length, int)
        assert (v.bounded[i], v.length[i], v.cap[i], v.value_at_length[i]) == (s.bounded, s.length, s.cap, s.value_at_length)

    m = np.arange(0, 5000, 7).reshape(-1, 1)
    grid = ropex.men_sum(np.array([32, 64]), 1e4, m)  # broadcast: (715, 1) x (2,)
    assert grid.shape == (715, 2)
    assert grid[100, 1] == ropex.men_sum(64, 1e4, int(m[100, 0]))

    targets = np.array([512, 1024])
    vb = ropex.men_base_for_context(64, targets)
    for i, t in enumerate(targets):
        sb = ropex.men_base_for_context(64, int(t))
        assert dataclasses.astuple(sb) == tuple(np.asarray(x)[i].item() for x in dataclasses.astuple(vb))

    sweep = ropex.cut_points(128, np.logspace(4, 7, 16), 4096, original_context=[[4096], [8192]])
    assert sweep.yarn_low.shape == (2, 16) and sweep.hope_pairs_kept.dtype == np.int32
    one = ropex.cut_points(128, float(np.logspace(4, 7, 16)[5]), 4096, original_context=8192)
    assert dataclasses.astuple(one) == tuple(np.asarray(x)[1, 5].item() for x in dataclasses.astuple(sweep))

    tol = np.array([1e-3, 1e-2, 0.1])
    nb = ropex.numeric_bounds("fp32", tol)
    assert list(nb.angle_error_position) == [ropex.numeric_bounds("fp32", t).angle_error_position for t in tol]
    assert ropex.slowest_period([64, 128], [1e4, 1e6]).shape == (2,)
    assert ropex.base_for_slowest_period(128, np.array([4096.0, 8192.0])).shape == (2,)


def test_errors() -> None:
    with pytest.raises(ropex.Error, match="^head_dim: must be an even number >= 2, got 7$"):
        ropex.men_context_length(7, 10000)
    with pytest.raises(ropex.Error, match="^base: must be > 1, got 0.5$"):
        ropex.men_sum(128, [1e4, 0.5], 3)
    with pytest.raises(ropex.Error, match="^m: must be >= 0, got -1$"):
        ropex.men_sum(128, 1e4, -1)
    with pytest.raises(ropex.Error, match="^cap: must be >= 1, got 0$"):
        ropex.men_context_length(128, 1e4, cap=0)
    with pytest.raises(ropex.Error, match="^static_pairs: must be >= 0, got -2$"):
        ropex.men_context_length(128, 1e4, static_pairs=-2)
    with pytest.raises(ropex.Error, match="^target: must be >= 2 tokens, got 1$"):
        ropex.men_base_for_context(128, 1)
    with pytest.raises(ropex.Error, match=r"^grid_step: must be in \[1e-6, 1\], got 2$"):
        ropex.men_base_for_context(128, 100, grid_step=2)
    with pytest.raises(ropex.Error, match="^target: must be an integer, got 100.5$"):
        ropex.men_base_for_context(128, 100.5)
    with pytest.raises(ropex.Error, match='^dtype: must be bf16, fp16 or fp32, got "int8"$'):
        ropex.numeric_bounds(np.int8)
    with pytest.raises(ropex.Error, match='^dtype: must be bf16, fp16 or fp32, got "fp8"$'):
        ropex.numeric_bounds("fp8")
    with pytest.raises(ropex.Error, match=r"^tolerance: must be in \(0, 1000\) radians, got 0$"):
        ropex.numeric_bounds("bf16", [1e-2, 0])
    with pytest.raises(ropex.Error, match=r"^tolerance: must be a finite number, got nan$"):
        ropex.numeric_bounds("bf16", float("nan"))
    with pytest.raises(ropex.Error, match=r"^p: must be in \[0, 1\], got 1.5$"):
        ropex.cut_points(128, 1e4, 4096, p=1.5)
    with pytest.raises(ropex.Error, match="^beta_fast: must exceed beta_slow > 0$"):
        ropex.cut_points(128, 1e4, 4096, beta_fast=1, beta_slow=2)
    with pytest.raises(ropex.Error, match="^head_dim: must be >= 4 for a slowest pair other than pair 0$"):
        ropex.base_for_slowest_period(2, 4096)
    with pytest.raises(ropex.Error, match="^head_dim: must fit in a 32-bit int, got 4294967296$"):
        ropex.slowest_period(2**32, 1e4)
    with pytest.raises(ropex.Error, match="shapes do not broadcast"):
        ropex.slowest_period([64, 128, 256], [1e4, 1e6])
