#!/usr/bin/env python3
"""HF transformers (torch, CPU, float32) on the same GGUF and tokens as bench_smollm2:
prefill of the first P tokens (+ the last row's logits), then D greedy decode steps with the KV
cache, tokens/s per repetition; optionally perplexity over all tokens in windows of C.
transformers dequantizes the GGUF to float32 (from_pretrained(gguf_file=...)).
Prints one JSON line, the same keys as bench_smollm2.

  python3 bench/cpu/hf_smollm2.py MODEL.gguf TOKENS.npy --threads 2 [--prefill 2048] [--decode 128] [--reps 3] [--ppl 2048]
Needs: pip install torch transformers gguf accelerate numpy (transformers loads a GGUF only with accelerate).
"""
import argparse, json, math, os, resource, time

import numpy as np
import torch
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("tokens")
ap.add_argument("--prefill", type=int, default=2048); ap.add_argument("--decode", type=int, default=128)
ap.add_argument("--reps", type=int, default=3); ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--ppl", type=int, default=0); ap.add_argument("--attn", default="sdpa")
a = ap.parse_args()
torch.set_num_threads(a.threads)
path = os.path.abspath(a.model)
model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                             torch_dtype=torch.float32, attn_implementation=a.attn).eval()
ids = torch.from_numpy(np.load(a.tokens).astype(np.int64))
prompt = ids[: a.prefill][None]
pre, dec, cpre, cdec, first = [], [], [], [], []
with torch.inference_mode():
    for _ in range(a.reps):
        t0, u0 = time.perf_counter(), time.process_time()
        out = model(prompt, use_cache=True, logits_to_keep=1)
        t1, u1 = time.perf_counter(), time.process_time()
        past, nxt, toks = out.past_key_values, out.logits[0, -1].argmax(), []
        for _ in range(a.decode):
            toks.append(int(nxt))
            out = model(nxt.view(1, 1), past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[0, -1].argmax()
        t2, u2 = time.perf_counter(), time.process_time()
        pre.append(prompt.shape[1] / (t1 - t0)); dec.append(a.decode / (t2 - t1)); first = toks[:16]
        cpre.append(prompt.shape[1] / (u1 - u0)); cdec.append(a.decode / (u2 - u1))
    res = {"mode": "hf-f32-" + a.attn, "threads": a.threads, "torch": torch.__version__,
           "prefill_tokens": int(prompt.shape[1]), "prefill_tok_s": [round(x, 2) for x in pre],
           "prefill_median": round(float(np.median(pre)), 2), "decode_tokens": a.decode,
           "decode_tok_s": [round(x, 2) for x in dec], "decode_median": round(float(np.median(dec)), 2),
           "first_tokens": first, "prefill_tok_per_cpu_s": round(float(np.median(cpre)), 2),
           "decode_tok_per_cpu_s": round(float(np.median(cdec)), 2)}
    if a.ppl:
        t0, nll, n = time.perf_counter(), 0.0, 0
        for s in range(0, ids.shape[0] - 1, a.ppl):
            w = ids[s : s + a.ppl][None]
            if w.shape[1] < 2: break
            logits = model(w).logits[0, :-1].float()
            nll += torch.nn.functional.cross_entropy(logits, w[0, 1:], reduction="sum").item(); n += w.shape[1] - 1
        res.update({"ppl_context": a.ppl, "ppl": math.exp(nll / n), "mean_nll": nll / n, "ppl_tokens": n,
                    "ppl_seconds": round(time.perf_counter() - t0, 2)})
res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(res))
