"""The laws from Python against the CLI's JSON (the same C++), the paper's values, and the
vectorized forms against a loop over the scalar ones."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
from typing import Any, Callable

import numpy as np
import pytest

import ropex


def test_readme_line() -> None:
    # README / docs/python.md: the limit of LLaMA-2 tuned with base 1e6.
    out = subprocess.run([sys.executable, "-c", "import ropex; print(ropex.extrapolation_limit(128, 4096, 1e6).limit)"],
                         capture_output=True, text=True, check=True).stdout
    assert round(float(out), 1) == 129026.8


def test_paper_values() -> None:
    # The values include/ropex/scaling_law.hpp static_asserts (paper.md).
    for d, T, want in [(128, 4096, 92), (128, 2048, 82), (128, 8192, 100), (128, 16384, 110), (128, 32768, 120),
                       (64, 2048, 42), (64, 4096, 46), (80, 2048, 52), (96, 4096, 68)]:
        assert ropex.critical_dimension(d, T) == want
    assert ropex.extrapolation_limit(128, 4096, 1e6).limit == pytest.approx(129026.78274161111, rel=1e-12)
    assert ropex.extrapolation_limit(128, 4096, 5e5).limit == pytest.approx(78399.72854675821, rel=1e-12)
    assert ropex.critical_base(4096, 16384) == pytest.approx(71738.43620009991, rel=1e-12)
    assert ropex.critical_base(4096, 32768) == pytest.approx(192144.4559864089, rel=1e-12)
    b = ropex.base_for_context(131072, 128, 4096)
    assert b.base == pytest.approx(1022121.8898931267, rel=1e-12)
    assert b.base_ceiling_free == pytest.approx(1378414.2796983898, rel=1e-12)
    assert ropex.extrapolation_limit(128, 4096, 1e6).regime == "larger_base"
    small = ropex.extrapolation_limit(128, 4096, 500, 16384)
    assert small.regime == "small_base_full" and small.updated_critical_dimension == 128 and not small.hard_bound
    assert small.equation == "16c+16d"


def test_result_types_are_frozen_with_every_field() -> None:
    r = ropex.extrapolation_limit(head_dim=128, train_len=4096, base=1e6)
    names = [f.name for f in dataclasses.fields(r)]
    assert names == ["regime", "limit", "hard_bound", "critical_dimension", "updated_applies",
                     "updated_critical_dimension", "critical_base", "larger_base_limit", "thresholds"]
    assert [f.name for f in dataclasses.fields(r.thresholds)] == ["beta_1", "beta_2", "beta_3"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.limit = 0  # type: ignore[misc]
    assert isinstance(r.limit, float) and isinstance(r.critical_dimension, int) and isinstance(r.hard_bound, bool)


GRID = list(itertools.product([64, 128], [2048, 4096], [500, 2000, 10000, 5e5, 1e6], [0, 16384]))


@pytest.mark.parametrize("d,T,base,tune", GRID)
def test_predict_equals_cli(cli_json: Callable[..., Any], d: int, T: float, base: float, tune: float) -> None:
    args = ["predict", "--head-dim", str(d), "--train-len", str(T), "--base", repr(float(base))]
    if tune:
        args += ["--tune-len", str(tune)]
    j = cli_json(*args)
    r = ropex.extrapolation_limit(d, T, base, tune)
    assert r.critical_dimension == j["critical_dimension"]
    assert r.critical_base == j["critical_base"]
    assert r.regime == j["regime"] and r.equation == j["equation"]
    if j["bounded"]:
        assert r.limit == j["extrapolation_limit"] and r.hard_bound == j["hard_bound"]
        assert r.larger_base_limit == j["larger_base_limit"]
    assert r.updated_applies == (j["updated_critical_dimension"] is not None)  # null, never absent
    if r.updated_applies:
        assert r.updated_critical_dimension == j["updated_critical_dimension"]
    assert (r.thresholds.beta_1, r.thresholds.beta_2, r.thresholds.beta_3) == (j["beta_1"], j["beta_2"], j["beta_3"])


@pytest.mark.parametrize("target", [8192, 32768, 131072, 1e6])
def test_base_equals_cli(cli_json: Callable[..., Any], target: float) -> None:
    j = cli_json("base", "--head-dim", "128", "--train-len", "4096", "--target", repr(float(target)))
    b = ropex.base_for_context(target, 128, 4096)
    assert (b.target, b.critical_dimension, b.base, b.base_ceiling_free) == (
        j["target"], j["critical_dimension"], j["base"], j["base_ceiling_free"])


def test_periods_equal_cli(cli_json: Callable[..., Any]) -> None:
    j = cli_json("periods", "--head-dim", "128", "--train-len", "4096", "--base", "1000000", "--tune-len", "16384")
    rows = j["pairs"] if isinstance(j, dict) else j
    t = ropex.period_table(128, 1e6, 4096, 16384)
    assert len(rows) == 64 == len(t.pair)
    for k, row in enumerate(rows):
        assert (int(t.pair[k]), float(t.theta[k]), float(t.period[k])) == (row["pair"], row["theta"], row["period"])
        assert bool(t.full_period_in_train[k]) == row["full_period_in_train"]
        assert bool(t.full_period_in_tune[k]) == row["full_period_in_tune"]
    # The counts of True are d_extra/2 at the pre-training base (eq. 13).
    t0 = ropex.period_table(128, 10000, 4096)
    assert int(t0.full_period_in_train.sum()) * 2 == ropex.critical_dimension(128, 4096)


@pytest.mark.parametrize("args,field", [
    (["predict", "--head-dim", "127", "--train-len", "4096", "--base", "1e6"], "head_dim"),
    (["predict", "--head-dim", "128", "--train-len", "4096", "--base", "0.5"], "base"),
    (["predict", "--head-dim", "128", "--train-len", "4096", "--base", "1e6", "--tune-len", "1000"], "tune_len"),
    (["predict", "--head-dim", "128", "--train-len", "5", "--base", "1e6"], "train_len"),
])
def test_errors_carry_the_cli_message(cli: Callable[..., Any], args: list[str], field: str) -> None:
    r = cli(*args, check=False)
    assert r.returncode == 2
    # The CLI prints the library's message and where the input came from: "... (from flag --base)".
    cli_msg = r.stderr.strip().removeprefix("ropex: error: ").split(" (from ")[0]
    d, T, base = int(args[2]), float(args[4]), float(args[6])
    tune = float(args[8]) if len(args) > 8 else 0
    with pytest.raises(ropex.Error) as e:
        ropex.extrapolation_limit(d, T, base, tune)
    assert str(e.value) == cli_msg and str(e.value).startswith(field + ":")
    assert isinstance(e.value, ValueError)
    with pytest.raises(ropex.Error) as ev:  # the vectorized path gives the same text
        ropex.extrapolation_limit(d, T, np.array([base, base]), tune)
    assert str(ev.value) == cli_msg


def test_vectorized_equals_scalar_loop() -> None:
    bases = np.logspace(2, 9, 301)
    v = ropex.extrapolation_limit(128, 4096, base=bases, tune_len=16384)
    assert v.limit.shape == (301,) and v.regime.shape == (301,)
    for i, b in enumerate(bases):
        s = ropex.extrapolation_limit(128, 4096, float(b), 16384)
        for f in dataclasses.fields(s):
            if f.name == "thresholds":
                continue
            assert getattr(v, f.name)[i] == getattr(s, f.name), (f.name, b)
        assert v.thresholds.beta_1[i] == s.thresholds.beta_1
    assert set(v.regime) == set(ropex.REGIMES)  # every regime is crossed by this sweep
    assert list(v.equation[:1]) == ["16c+16d"]


def test_broadcasting_and_shapes() -> None:
    r = ropex.extrapolation_limit(np.array([[64], [128]]), 4096, base=np.logspace(3, 8, 200))
    assert r.limit.shape == (2, 200) and r.critical_dimension.shape == (2, 200)
    assert list(r.critical_dimension[:, 0]) == [46, 92]
    assert ropex.critical_dimension(128, [2048, 4096, 8192]).tolist() == [82, 92, 100]
    assert ropex.critical_base([4096, 4096], [16384, 32768]).tolist() == [ropex.critical_base(4096, 16384),
                                                                          ropex.critical_base(4096, 32768)]
    b = ropex.base_for_context(np.array([32768.0, 131072.0]), 128, 4096)
    assert b.base[1] == ropex.base_for_context(131072, 128, 4096).base
    t = ropex.period_table(128, np.array([1e4, 1e6]), 4096)
    assert t.theta.shape == (2, 64) and t.theta[1, 5] == ropex.period_table(128, 1e6, 4096).theta[5]
    z = ropex.extrapolation_limit(128, 4096, np.float64(1e6))  # numpy scalars are scalars
    assert isinstance(z.limit, float)
    zero_d = ropex.extrapolation_limit(128, 4096, np.array(1e6))
    assert zero_d.limit == z.limit
    empty = ropex.extrapolation_limit(128, 4096, np.array([]))
    assert empty.limit.shape == (0,)
    with pytest.raises(ropex.Error, match="head_dim: must be an integer"):
        ropex.critical_dimension(127.5, 4096)
    with pytest.raises(ropex.Error, match="do not broadcast"):
        ropex.extrapolation_limit(128, [4096, 8192], [1e5, 1e6, 1e7])
    with pytest.raises(ropex.Error, match="base: expected numbers"):
        ropex.extrapolation_limit(128, 4096, np.array(["a"]))


def test_sweep_over_bases_shares_the_model_terms() -> None:
    # One model, many bases: the model's terms are one value each (read-only broadcast views);
    # regime names are made on first read. Both equal the element-wise results.
    bases = np.logspace(2, 9, 50).reshape(5, 10)
    v = ropex.extrapolation_limit(128, 4096, base=bases, tune_len=16384)
    for f in ("critical_dimension", "critical_base"):
        a = getattr(v, f)
        assert a.shape == (5, 10) and a.strides == (0, 0) and not a.flags.writeable
    assert v.thresholds.beta_1.shape == (5, 10) and v.limit.flags.writeable and v.limit.strides != (0, 0)
    assert "regime" not in vars(v)
    assert v.regime.shape == (5, 10) and v.regime[0, 0] == "small_base_full" and v.regime[-1, -1] == "larger_base"
    assert v.regime is v.regime and v.equation.shape == (5, 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.regime = v.regime  # type: ignore[misc]
    s = ropex.extrapolation_limit(128, 4096, float(bases[3, 7]), 16384)
    for f in dataclasses.fields(s):
        got = getattr(v, f.name)
        want = getattr(s, f.name)
        if f.name == "thresholds":
            assert dataclasses.astuple(want) == tuple(float(x[3, 7]) for x in dataclasses.astuple(got))
        else:
            assert got[3, 7] == want
    # per-element models (an array of train lengths) give full arrays
    w = ropex.extrapolation_limit(128, np.array([2048, 4096]), 1e6)
    assert w.critical_dimension.strides != (0,) and list(w.critical_dimension) == [82, 92]
