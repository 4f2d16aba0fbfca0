#!/usr/bin/env python3
"""Medians of bench/cpu/run_smollm2.sh's results.jsonl as a markdown table."""
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(v): return statistics.median(v) if v else float("nan")
def runs(variant, key):
    return [r[key] for r in rows if r.get("variant") == variant and key in r]
def fmt(v): return "/".join(f"{x:.1f}" for x in v)

hf_pre, hf_dec = med(runs("hf", "prefill_median")), med(runs("hf", "decode_median"))
print("| variant | prefill tok/s (median; runs) | vs HF | decode tok/s (median; runs) | vs HF |")
print("|---|---|---|---|---|")
for v in ["ropex-before", "ropex-portable", "ropex-native", "ropex-native-fast", "hf"]:
    p, d = runs(v, "prefill_median"), runs(v, "decode_median")
    if p:
        print(f"| {v} | {med(p):.1f} ({fmt(p)}) | {med(p) / hf_pre:.2f}x | {med(d):.1f} ({fmt(d)}) | {med(d) / hf_dec:.2f}x |")
pp, tg = runs("llama.cpp-pp", "avg_ts"), runs("llama.cpp-tg", "avg_ts")
if pp:
    print(f"| llama.cpp | {med(pp):.1f} ({fmt(pp)}) | {med(pp) / hf_pre:.2f}x | {med(tg):.1f} ({fmt(tg)}) | {med(tg) / hf_dec:.2f}x |")
print()
print("tokens per CPU-second of the process (llama.cpp: its -d 2048 depth fill and model load count against tg)")
print("| variant | prefill tok/CPU-s | vs HF | decode tok/CPU-s | vs HF |")
print("|---|---|---|---|---|")
hp, hd = med(runs("hf", "prefill_tok_per_cpu_s")), med(runs("hf", "decode_tok_per_cpu_s"))
for v in ["ropex-before", "ropex-portable", "ropex-native", "ropex-native-fast", "hf"]:
    p, d = runs(v, "prefill_tok_per_cpu_s"), runs(v, "decode_tok_per_cpu_s")
    if p:
        print(f"| {v} | {med(p):.1f} ({fmt(p)}) | {med(p) / hp:.2f}x | {med(d):.1f} ({fmt(d)}) | {med(d) / hd:.2f}x |")
lp = [r["n_prompt"] / r["cpu_s"] for r in rows if r.get("variant") == "llama.cpp-pp" and r.get("cpu_s")]
if lp:
    print(f"| llama.cpp (pp2048 incl. load) | {med(lp):.1f} ({fmt(lp)}) | {med(lp) / hp:.2f}x | | |")
print()
print("| perplexity, context 2048 | ppl | mean NLL | tokens scored | seconds | peak RSS MB |")
print("|---|---|---|---|---|---|")
for r in rows:
    if r.get("variant", "").endswith("ppl") or "ppl-" in r.get("variant", ""):
        secs = r.get("ppl_seconds", (r.get("prompt_eval_ms") or 0) / 1000)
        print(f"| {r['variant']} | {r.get('ppl', float('nan')):.4f} | {r.get('mean_nll', float('nan')):.5f} | "
              f"{r.get('ppl_tokens', r.get('prompt_eval_tokens', ''))} | {secs:.1f} | {r.get('peak_rss_mb', float('nan')):.0f} |")
ex = [r for r in rows if r.get("variant") == "ropex-native-ppl-exact"]
fa = [r for r in rows if r.get("variant") == "ropex-native-ppl-fast"]
if ex and fa:
    print(f"\nfast vs exact perplexity: {100 * (fa[0]['ppl'] / ex[0]['ppl'] - 1):+.3f}%")
