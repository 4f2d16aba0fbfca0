"""Python module vs a Python loop and vs C++, on the CPU.

1. ropex.extrapolation_limit over 1e6 log-spaced bases (d = 128, T_train = 4096): one vectorized
   call, a Python loop over the scalar binding (timed on a slice, scaled), and the C++ loop
   (bench_cpp.cpp) compiled with the module's flags.
2. ropex.apply_rope in place on [16384, 32, 128] float32 with a prebuilt table, against the C++
   kernel on the same shape.

Usage (after `pip install .`):
  python bench/python/bench_vectorized.py [--cpp build-py-bench/python/ropex_py_bench_cpp]
Without --cpp it configures and builds the C++ program in build-py-bench/ (CMake, -j2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import ropex

ROOT = Path(__file__).resolve().parents[2]


class Best:
    """Best-of-reps seconds: wall clock and CPU time of the process (steadier on a shared machine)."""

    def __init__(self, reps: int, f: Callable[[], Any]) -> None:
        self.wall = self.cpu = float("inf")
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            self.cpu = min(self.cpu, time.process_time() - c0)
            self.wall = min(self.wall, time.perf_counter() - t0)

    def scaled(self, k: float) -> "Best":
        self.wall *= k
        self.cpu *= k
        return self


def build_cpp() -> Path:
    import nanobind  # the module's build needs it; so does configuring python/

    b = ROOT / "build-py-bench"
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(b), "-DCMAKE_BUILD_TYPE=Release", "-DROPEX_PYTHON=ON",
                    "-DROPEX_BUILD_TESTS=OFF", "-DROPEX_BUILD_EXAMPLES=OFF", "-DROPEX_BUILD_BENCH=OFF",
                    "-DROPEX_INSTALL=OFF", f"-DPython_EXECUTABLE={sys.executable}",
                    f"-Dnanobind_ROOT={nanobind.cmake_dir()}"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(b), "-j2", "--target", "ropex_py_bench_cpp"], check=True,
                   stdout=subprocess.DEVNULL)
    return b / "python" / "ropex_py_bench_cpp"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpp", type=Path, help="the built ropex_py_bench_cpp (default: build it)")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--loop-n", type=int, default=50_000, help="bases the Python loop times (scaled to --n)")
    ap.add_argument("--shape", type=int, nargs=3, default=[16384, 32, 128])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    cpp = a.cpp or build_cpp()
    tokens, heads, head_dim = a.shape
    c = json.loads(subprocess.run([str(cpp), str(a.n), str(tokens), str(heads), str(head_dim), str(a.reps)],
                                  check=True, capture_output=True, text=True).stdout)

    bases = np.logspace(3, 8, a.n)
    vec = Best(a.reps, lambda: ropex.extrapolation_limit(128, 4096, base=bases))
    # .regime names are made on first read (a million str): timed apart, for a sweep that reads them
    vec_regime = Best(a.reps, lambda: ropex.extrapolation_limit(128, 4096, base=bases).regime)
    v = ropex.extrapolation_limit(128, 4096, base=bases)
    assert abs(float(np.sum(v.limit)) - c["laws_checksum"]) <= 1e-9 * c["laws_checksum"], "C++ and Python disagree"
    sl = [float(b) for b in bases[: a.loop_n]]
    loop = Best(max(1, a.reps // 2), lambda: [ropex.extrapolation_limit(128, 4096, b) for b in sl]).scaled(a.n / a.loop_n)

    rs = ropex.RopeScaling.from_config({"rope_theta": 10000})
    table = ropex.rope_table(rs.inv_freq(head_dim), np.arange(tokens))
    x = (np.arange(tokens * heads * head_dim, dtype=np.int64) % 97).astype(np.float32).reshape(tokens, heads, head_dim)
    x *= 0.01
    rope = Best(a.reps, lambda: ropex.apply_rope(x, table=table))
    gb = 2 * x.nbytes / 1e9  # read + write

    r: dict[str, Any] = {"n": a.n, "shape": [tokens, heads, head_dim], "cpu_count": os.cpu_count()}
    for clock, key in (("wall", ""), ("cpu", "_cpu")):
        get = (lambda b: b.wall) if clock == "wall" else (lambda b: b.cpu)
        cl, ca, cr = c["laws" + key + "_s"], c["laws_arrays" + key + "_s"], c["apply_rope" + key + "_s"]
        r[clock] = {
            "vectorized_s": get(vec), "vectorized_with_regime_names_s": get(vec_regime), "python_loop_s": get(loop),
            "cpp_loop_s": cl, "cpp_loop_arrays_s": ca, "speedup_vs_python_loop": get(loop) / get(vec),
            "vectorized_over_cpp": get(vec) / cl, "vectorized_over_cpp_arrays": get(vec) / ca,
            "apply_rope_py_s": get(rope), "apply_rope_cpp_s": cr, "apply_rope_py_gbs": gb / get(rope),
            "apply_rope_cpp_gbs": gb / cr, "apply_rope_fraction_of_cpp": cr / get(rope),
        }
    if a.json:
        print(json.dumps(r, indent=2))
        return
    for clock in ("wall", "cpu"):
        q = r[clock]
        print(f"[{clock} time] extrapolation_limit over {a.n:.0e} bases (d=128, T_train=4096):")
        print(f"  vectorized call      {q['vectorized_s'] * 1e3:9.2f} ms  ({q['vectorized_s'] / a.n * 1e9:6.1f} ns/base)")
        print(f"  + reading .regime    {q['vectorized_with_regime_names_s'] * 1e3:9.2f} ms  (a million names made on first read)")
        print(f"  Python loop (scalar) {q['python_loop_s'] * 1e3:9.2f} ms  ({q['python_loop_s'] / a.n * 1e9:6.1f} ns/base)  "
              f"-> vectorized is {q['speedup_vs_python_loop']:.0f}x faster")
        print(f"  C++ loop, literal d and T_train  {q['cpp_loop_s'] * 1e3:9.2f} ms  -> vectorized takes "
              f"{q['vectorized_over_cpp']:.2f}x the C++ time")
        print(f"  C++ loop, inputs from arrays     {q['cpp_loop_arrays_s'] * 1e3:9.2f} ms  -> vectorized takes "
              f"{q['vectorized_over_cpp_arrays']:.2f}x")
        print(f"  apply_rope in place on [{tokens}, {heads}, {head_dim}] float32 ({x.nbytes / 1e6:.0f} MB): Python "
              f"{q['apply_rope_py_s'] * 1e3:.2f} ms ({q['apply_rope_py_gbs']:.2f} GB/s), C++ {q['apply_rope_cpp_s'] * 1e3:.2f} ms "
              f"({q['apply_rope_cpp_gbs']:.2f} GB/s) -> {100 * q['apply_rope_fraction_of_cpp']:.0f}% of the C++ throughput")

if __name__ == "__main__":
    main()
