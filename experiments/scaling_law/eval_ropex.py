#!/usr/bin/env python3
"""Stage 3 (this machine, CPU): per-position loss of every checkpoint on held-out Emma via `ropex perplexity`.
One non-overlapping window of Emma per call (--window k = tokens [k*N, (k+1)*N)), into
results/ropex_win<k>/<name>.{json,csv}; analyze.py averages the windows every model has.
Resumable: a model whose json exists is skipped.
Usage: eval_ropex.py ROPEX_BINARY [--window k] [--context N]"""
import argparse, glob, json, os, subprocess, time
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# inference-time baselines on the untuned pre-trained model (factor = 16384 / 512)
BASELINES = {
    "baseline_dynamic_ntk": '{"rope_type":"dynamic","factor":32}',
    "baseline_linear_pi": '{"rope_type":"linear","factor":32}',
    "baseline_yarn": '{"rope_type":"yarn","factor":32,"original_max_position_embeddings":512}',
}

ap = argparse.ArgumentParser()
ap.add_argument("ropex")
ap.add_argument("--window", type=int, default=0)
ap.add_argument("--context", type=int, default=16384)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
out = os.path.join(HERE, "results", f"ropex_win{a.window}")
os.makedirs(out, exist_ok=True)
ids = np.load(os.path.join(HERE, "data", "emma.npy"))[a.window * a.context:(a.window + 1) * a.context]
assert ids.size == a.context, "Emma is shorter than that window"
tok = os.path.join(HERE, "data", f"emma_win{a.window}_{a.context}.npy")
np.save(tok, ids.astype(np.int32))

order = ["tune512_b1e+06", "tune512_b160000", "tune512_b40000", "tune512_b10000", "tune512_b2000",
         "tune512_b500", "tune512_b200", "tune512_b50", "pretrained_b10000"]
jobs = [(n, os.path.join(HERE, "ckpt", n), None) for n in order]
jobs += [(n, os.path.join(HERE, "ckpt", "pretrained_b10000"), s) for n, s in BASELINES.items()]
jobs += [(n, os.path.join(HERE, "ckpt", n), None) for n in ["tune1024_b10000", "tune1024_b500", "tune1024_b160000"]]
for name, model, scaling in jobs:
    js = os.path.join(out, f"{name}.json")
    if os.path.exists(js):
        continue
    cmd = [a.ropex, "perplexity", "--model", model, "--tokens", tok, "--context", str(a.context),
           "--bins", str(a.context // 256), "--json", "--out", os.path.join(out, f"{name}.csv"),
           "--threads", str(a.threads)]
    if scaling:
        cmd += ["--rope-scaling", scaling]
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(name, "FAILED:", r.stderr.strip()[:500], flush=True)
        continue
    j = json.loads(r.stdout)
    j["command"] = " ".join(os.path.relpath(c, HERE) if c.startswith("/") else c for c in cmd)
    j["seconds"] = time.time() - t
    with open(js, "w") as f:
        json.dump(j, f, indent=1)
    print(f"{name}: mean nll {j['mean_nll']:.4f} windows {j['windows']} ({j['seconds']:.0f}s)", flush=True)
