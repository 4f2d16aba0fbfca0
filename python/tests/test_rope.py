"""RoPE from Python: every variant against the Hugging Face fixtures the C++ tests use
(tests/fixtures/rope/hf_rope.json), and apply_rope on the arrays a user may pass."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

import ropex
from conftest import FIXTURES

HF = json.loads((FIXTURES / "rope" / "hf_rope.json").read_text())
CASES = HF["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_inv_freq_and_attention_factor_match_hf(case: dict[str, Any]) -> None:
    d = HF["head_dim"]
    rs = ropex.RopeScaling.from_config(case["config"], case["name"])
    assert rs.type == case["rope_type"]
    for v in case["values"]:
        ours = rs.inv_freq(d, v["seq_len"])
        assert ours.dtype == np.float64 and ours.shape == (d // 2,)
        np.testing.assert_allclose(ours, v["inv_freq"], rtol=2e-6)  # HF evaluates in float32
        assert rs.attention_factor(v["seq_len"]) == pytest.approx(v["attention_factor"], rel=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_apply_rope_matches_hf(case: dict[str, Any]) -> None:
    d = HF["head_dim"]
    rs = ropex.RopeScaling.from_config(case["config"], case["name"])
    a = case["apply"]
    pos = np.asarray(a["positions"], dtype=np.int64)
    q = np.asarray(a["q"], dtype=np.float32).reshape(len(pos), a["heads"], d)
    seq_len = int(pos.max()) + 1
    if rs.type == "dynamic":  # HF's module is built at max_position_embeddings (as test_rope.cpp)
        seq_len = max(seq_len, rs.max_position_embeddings)
    out = ropex.apply_rope(q, pos, rope=rs, seq_len=seq_len)
    assert out is q
    assert np.abs(q.reshape(-1) - np.asarray(a["q_rot"], dtype=np.float32)).max() < 3e-4


def test_from_config_path_and_errors(tmp_path: Any) -> None:
    cfg = FIXTURES / "configs" / "Llama-3.1-8B" / "config.json"
    rs = ropex.RopeScaling.from_config(cfg)
    assert (rs.type, rs.base, rs.factor, rs.original_max_position_embeddings) == ("llama3", 500000.0, 8.0, 8192)
    assert ropex.RopeScaling.from_config(str(cfg)).inv_freq(128, 10).tolist() == rs.inv_freq(128, 10).tolist()
    with pytest.raises(ropex.Error) as e:
        ropex.RopeScaling.from_config({"rope_theta": 1.0}, "cfg.json")
    assert str(e.value).startswith("cfg.json: rope_theta: ")
    bad = tmp_path / "config.json"
    bad.write_text('{"rope_scaling": {"rope_type": "yarn", "factor": -2}, "max_position_embeddings": 4096}')
    with pytest.raises(ropex.Error, match=f"^{bad}: rope_scaling.factor: must be a finite number > 0"):
        ropex.RopeScaling.from_config(bad)
    with pytest.raises(ropex.Error, match="no-such.json"):
        ropex.RopeScaling.from_config(tmp_path / "no-such.json")
    with pytest.raises(ropex.Error, match="expected a dict or a path"):
        ropex.RopeScaling.from_config(42)  # type: ignore[arg-type]
    over = rs.with_overrides(base=1e6, rope_scaling={"rope_type": "linear", "factor": 4})
    assert (over.type, over.base, over.factor) == ("linear", 1e6, 4.0)
    with pytest.raises(ropex.Error):
        rs.inv_freq(127)


def test_rope_table_and_layouts() -> None:
    inv = ropex.RopeScaling.from_config({"rope_theta": 10000}).inv_freq(8)
    t = ropex.rope_table(inv, [0, 1, 1000000], attention_factor=2.0)
    assert (t.n_tokens, t.half) == (3, 4) and t.cos.shape == (3, 4) and t.cos.dtype == np.float32
    assert t.cos[0].tolist() == [2.0] * 4 and t.sin[0].tolist() == [0.0] * 4
    ang = np.fmod(1000000 * inv, 2 * np.pi)
    np.testing.assert_allclose(t.cos[2], 2 * np.cos(ang), atol=1e-6)
    # interleaved == half after permuting each head's dims (HF's Meta->HF q/k permutation)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 8)).astype(np.float32)
    perm = np.array([0, 2, 4, 6, 1, 3, 5, 7])  # half-layout dim j holds interleaved dim perm[j]
    half = np.ascontiguousarray(x[:, :, perm])
    ropex.apply_rope(x, np.arange(5), inv_freq=inv, layout="interleaved")
    ropex.apply_rope(half, np.arange(5), inv_freq=inv, layout="half")
    np.testing.assert_allclose(half, x[:, :, perm], atol=1e-6)
    with pytest.raises(ropex.Error, match='layout: must be "half" or "interleaved"'):
        ropex.apply_rope(x, np.arange(5), inv_freq=inv, layout="neox")


def _ref(x: np.ndarray, pos: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """numpy reference of the half layout (the test's own, in float64)."""
    r = 2 * len(inv)
    a = pos[:, None].astype(np.float64) * inv[None, :]
    c, s = np.cos(a)[:, None, :], np.sin(a)[:, None, :]
    y = x.astype(np.float64).copy()
    x1, x2 = y[..., : r // 2].copy(), y[..., r // 2 : r].copy()
    y[..., : r // 2] = x1 * c - x2 * s
    y[..., r // 2 : r] = x1 * s + x2 * c
    return y


INV = ropex.RopeScaling.from_config({"rope_theta": 10000}).inv_freq(64)


def test_zero_copy_in_place_and_out_of_place() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 4, 64)).astype(np.float32)
    orig = x.copy()
    addr = x.__array_interface__["data"][0]
    y = ropex.apply_rope(x, np.arange(7), inv_freq=INV)
    assert y is x and y.__array_interface__["data"][0] == addr  # the C++ kernel wrote x's own buffer
    np.testing.assert_allclose(x, _ref(orig, np.arange(7), INV), atol=2e-5)
    z = ropex.apply_rope(orig, np.arange(7), inv_freq=INV, inplace=False)
    assert z.__array_interface__["data"][0] != orig.__array_interface__["data"][0]
    np.testing.assert_array_equal(z, x)
    out = np.empty_like(orig)
    out_addr = out.__array_interface__["data"][0]
    r = ropex.apply_rope(orig, np.arange(7), inv_freq=INV, out=out)
    assert r is out and out.__array_interface__["data"][0] == out_addr
    np.testing.assert_array_equal(out, x)
    # a view into a bigger buffer: the kernel writes through the view, the rest is untouched
    big = rng.standard_normal((10, 4, 64)).astype(np.float32)
    before = big.copy()
    v = big[2:9]
    ropex.apply_rope(v, np.arange(7), inv_freq=INV)
    np.testing.assert_array_equal(big[:2], before[:2])
    np.testing.assert_allclose(big[2:9], _ref(before[2:9], np.arange(7), INV), atol=2e-5)


def test_strided_and_non_contiguous() -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal((12, 4, 64)).astype(np.float32)
    pos = np.array([3, 1, 4, 1, 5, 9])
    for view in (base.copy()[::2], base.copy().transpose(1, 0, 2).copy().transpose(1, 0, 2)[:6],
                 base.copy()[:6, ::-1], base.copy()[:6, :, :64]):
        assert view.ndim == 3
        want = _ref(np.array(view), pos, INV)
        ropex.apply_rope(view, pos, inv_freq=INV)
        np.testing.assert_allclose(view, want, atol=2e-5)
    # head_dim not unit-stride: a clear error, never a wrong result
    wide = rng.standard_normal((6, 4, 128)).astype(np.float32)
    with pytest.raises(ropex.Error, match="head_dim axis must have unit stride"):
        ropex.apply_rope(wide[:, :, ::2], pos, inv_freq=INV)
    # partial rotary: dims past 2*len(inv_freq) untouched
    x = rng.standard_normal((6, 2, 96)).astype(np.float32)
    tail = x[..., 64:].copy()
    ropex.apply_rope(x, pos, inv_freq=INV)
    np.testing.assert_array_equal(x[..., 64:], tail)


def test_batch_axis() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 2, 64)).astype(np.float32)
    shared = x.copy()
    ropex.apply_rope(shared, np.arange(5), inv_freq=INV)
    for b in range(3):
        np.testing.assert_allclose(shared[b], _ref(x[b], np.arange(5), INV), atol=2e-5)
    per = x.copy()
    pos = np.array([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14], [7, 7, 7, 7, 7]])
    ropex.apply_rope(per, pos, inv_freq=INV)
    for b in range(3):
        np.testing.assert_allclose(per[b], _ref(x[b], pos[b], INV), atol=2e-5)
    with pytest.raises(ropex.Error, match=r"positions of shape \[tokens\] or \[batch, tokens\]"):
        ropex.apply_rope(x, np.arange(4), inv_freq=INV)


def test_bad_arrays_raise_clear_errors() -> None:
    x = np.zeros((4, 2, 64), np.float32)
    with pytest.raises(ropex.Error, match="dtype must be float32, float64, float16 or bfloat16"):
        ropex.apply_rope(np.zeros((4, 2, 64), np.int32), np.arange(4), inv_freq=INV)
    with pytest.raises(ropex.Error, match=r"expected shape \[tokens, heads, head_dim\]"):
        ropex.apply_rope(np.zeros((4, 64), np.float32), np.arange(4), inv_freq=INV)
    with pytest.raises(ropex.Error, match="expected a numpy array"):
        ropex.apply_rope([[[0.0] * 64]], np.arange(1), inv_freq=INV)  # type: ignore[arg-type]
    with pytest.raises(ropex.Error, match="table has 3 rows for 4 tokens"):
        ropex.apply_rope(x, np.arange(3), inv_freq=INV)
    with pytest.raises(ropex.Error, match="rotary dim 128 exceeds head_dim 64"):
        ropex.apply_rope(x, np.arange(4), inv_freq=np.ones(64))
    ro = np.zeros((4, 2, 64), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ropex.Error, match="read-only"):
        ropex.apply_rope(ro, np.arange(4), inv_freq=INV)
    assert ropex.apply_rope(ro, np.arange(4), inv_freq=INV, inplace=False).flags.writeable
    with pytest.raises(ropex.Error, match="positions: expected integers"):
        ropex.apply_rope(x, np.arange(4.0), inv_freq=INV)
    with pytest.raises(ropex.Error, match="give inv_freq= or rope="):
        ropex.apply_rope(x, np.arange(4))
    with pytest.raises(ropex.Error, match="out: must be a numpy array"):
        ropex.apply_rope(x, np.arange(4), inv_freq=INV, out=np.zeros((4, 2, 64), np.float64))
    # the C++ entry point itself refuses what the wrapper would have caught
    with pytest.raises(TypeError):
        ropex._core.apply_rope("x", ropex.rope_table(INV, np.arange(4)))  # type: ignore[arg-type]
    with pytest.raises(ropex.Error):
        ropex._core.apply_rope(np.zeros((4, 2, 64), np.int16), ropex.rope_table(INV, np.arange(4)))


def test_prebuilt_table_float64_float16_bfloat16() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, 3, 64)).astype(np.float32)
    table = ropex.rope_table(INV, np.arange(9))
    ref = ropex.apply_rope(x, table=table, inplace=False)
    x64 = x.astype(np.float64)
    ropex.apply_rope(x64, table=table)
    np.testing.assert_allclose(x64, ref, atol=1e-5)
    h = x.astype(np.float16)
    addr = h.__array_interface__["data"][0]
    ropex.apply_rope(h, table=table)
    assert h.__array_interface__["data"][0] == addr and h.dtype == np.float16
    np.testing.assert_allclose(h.astype(np.float32), ref, atol=1e-2)
    ml_dtypes = pytest.importorskip("ml_dtypes")
    b = x.astype(ml_dtypes.bfloat16)
    addr = b.__array_interface__["data"][0]
    ropex.apply_rope(b, table=table)
    assert b.__array_interface__["data"][0] == addr and b.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(b.astype(np.float32), ref, atol=5e-2)
    with pytest.raises(ropex.Error, match="either table= or positions"):
        ropex.apply_rope(x, np.arange(9), table=table)
