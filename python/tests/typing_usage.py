"""Type-checked use of the public API (mypy --strict in test_typing.py); never run by pytest."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

import ropex


def how_far() -> float:
    lim = ropex.extrapolation_limit(head_dim=128, train_len=4096, base=1e6)
    d: ropex.ExtrapolationLimit = lim
    b: ropex.BaseForContext = ropex.base_for_context(131072, 128, 4096)
    t: ropex.PeriodTable = ropex.period_table(128, 1e6, 4096)
    theta: npt.NDArray[np.float64] = t.theta
    sweep = ropex.extrapolation_limit(128, 4096, base=np.logspace(3, 8, 200))
    limits = np.asarray(sweep.limit)
    cd = ropex.critical_dimension(128, 4096)
    cb = ropex.critical_base(4096, 16384)
    return float(np.asarray(d.limit)) + float(np.asarray(b.base)) + float(theta[0]) + float(limits[0]) + float(
        np.asarray(cd)) + float(np.asarray(cb))


def rope(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    rs = ropex.RopeScaling.from_config({"rope_theta": 500000.0})
    inv: npt.NDArray[np.float64] = rs.inv_freq(rs.rotary_dim(128), seq_len=8192)
    table: ropex.RopeTable = ropex.rope_table(inv, np.arange(x.shape[0]), rs.attention_factor(8192))
    cos: npt.NDArray[np.float32] = table.cos
    ropex.apply_rope(x, table=table, layout="half")
    y = ropex.apply_rope(x, np.arange(x.shape[0]), rope=rs, inplace=False)
    y += cos[0, 0]
    return y


def model(path: str) -> float:
    m = ropex.Model(path, device="cpu", dtype="f32", rope_base=1e6)
    dtype: str = m.dtype
    ids = np.arange(16)
    logits: npt.NDArray[np.float32] = m.logits(ids, progress=lambda done, total: None)
    nll: npt.NDArray[np.float64] = m.nll(ids)
    r: ropex.PerplexityResult = m.perplexity(ids, context=8, stride=4)
    curve: npt.NDArray[np.float64] = r.position_nll
    new: list[int] = m.generate([1, 2, 3], steps=4, temperature=0.0, progress=True)
    text: str = m.detokenize(m.tokenize("hello"))
    return float(logits.sum() + nll.sum() + curve[0]) + r.perplexity + len(new) + len(text) + len(dtype)


def evaluate(path: str) -> float:
    m = ropex.Model(path)
    pk: ropex.PasskeyResult = m.passkey([256, 512], [0.0, 1.0], 2, seed=1, progress=None)
    cell: ropex.PasskeyCell = pk.cells[0]
    trial: ropex.PasskeyTrial = pk.trials[0]
    again: ropex.PasskeyResult = ropex.passkey(path, lengths=[256], trials=1)
    report: dict[str, Any] = m.check("book.txt", "out", max_len=1024, rope_base=[1e6],
                                     rope_scaling=[{"rope_type": "yarn", "factor": 4.0}], passkey_trials=0)
    report2: dict[str, Any] = ropex.check(path, "book.txt", "out2", max_len=1024)
    return cell.accuracy + trial.answer_nll + again.seconds + len(report) + len(report2)


def theories() -> float:
    length: ropex.MenLength = ropex.men_context_length(128, np.logspace(4, 6, 8), cap=ropex.MEN_SCAN_CAP)
    base: ropex.MenBase = ropex.men_base_for_context(128, 4096, static_pairs=0, grid_step=1e-3)
    cuts: ropex.CutPoints = ropex.cut_points(128, 5e5, 4096, original_context=8192, beta_fast=32, p=0.25)
    bounds: ropex.NumericBounds = ropex.numeric_bounds(np.float16, tolerance=[1e-3, 1e-2])
    b_m = ropex.men_sum(128, 1e4, np.arange(100))
    period = ropex.slowest_period(128, 1e4) + ropex.base_for_slowest_period(128, 65536)
    return float(np.sum(length.length) + np.sum(base.base) + np.sum(cuts.yarn_low) + np.sum(bounds.exact_positions)
                 + np.sum(b_m) + np.sum(period)) + bounds.precision


try:
    ropex.critical_dimension(127, 4096)
except ropex.Error as e:
    msg: str = str(e)
