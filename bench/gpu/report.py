#!/usr/bin/env python3
"""Merges bench_gpu's figures (ropex.json) with the PyTorch peers (peers.json) into the results
schema, bench/results/<card>.json, and prints the Markdown table for docs/benchmarks.md.

    python3 bench/gpu/report.py ropex.json peers.json --out-dir DIR
"""
import argparse
import datetime
import json
import os
import re


def key(op, shape):
    return op, tuple(sorted((k, v) for k, v in shape.items() if k != "fused_rope"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ropex")
    ap.add_argument("peers")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    ours = json.load(open(args.ropex))
    try:
        peers = json.load(open(args.peers))
    except (OSError, ValueError):
        peers = {"cases": []}
    bw = ours["bandwidth"]
    peer_by_key = {key(c["op"], c["shape"]): c for c in peers["cases"]}
    cases, rows = [], []
    for c in ours["cases"]:
        p = peer_by_key.get(key(c["op"], c["shape"]), {})
        pe = {k: v for k, v in p.get("peers", {}).items()}
        if c["op"] in ("rope", "decode"):
            pe["copy_bandwidth"] = bw["copy_bandwidth"]
            pe["read_bandwidth"] = bw["read_bandwidth"]
        cases.append({"op": c["op"], "shape": c["shape"], "unit": c["unit"], "ropex": c["ropex"], "peers": pe})
        rows.append((c, pe, p.get("modes", {})))
        if c["op"] == "prefill" and "fused_rope_tflops" in c:  # the same shape with RoPE fused into the loads
            cases.append({"op": "prefill", "shape": dict(c["shape"], fused_rope=True), "unit": "TFLOP/s",
                          "ropex": c["fused_rope_tflops"], "peers": {}})
    card = ours["card"]
    date = datetime.date.today().isoformat()
    result = {"card": card, "date": date, "cases": cases}  # the results schema, nothing more
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, slug + ".json"), "w") as f:
        json.dump(result, f, indent=1)

    def r(x, nd=0):
        return "n/a" if x is None else f"{x:.{nd}f}"

    md = [f"Card: **{card}** ({ours['sm_count']} SMs, {ours['l2_bytes'] >> 20} MB L2), date {date}, torch "
          f"{peers.get('torch', '?')} / cuDNN {peers.get('cudnn', '?')}. Copy bandwidth (read+write) "
          f"{bw['copy_bandwidth']:.0f} GB/s, streaming read {bw['read_bandwidth']:.0f} GB/s, bf16 matmul "
          f"(8192^3, torch) {peers.get('matmul_bf16_tflops', float('nan')):.0f} TFLOP/s.", ""]
    md += ["### Prefill (bf16, head_dim 128, 32 query heads, 16K tokens per batch; TFLOP/s = 4·b·h·s²·d / t, halved for causal)", "",
           "| heads q/kv | causal | seq x batch | ropex | SDPA flash | SDPA cuDNN | ropex / flash | ropex / cuDNN | RoPE overhead (once / per tile) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for c, pe, modes in rows:
        if c["op"] != "prefill":
            continue
        s = c["shape"]
        fl, cu = pe.get("sdpa_flash"), pe.get("sdpa_cudnn")
        md.append(f"| {s['heads_q']}/{s['heads_kv']} | {'yes' if s['causal'] else 'no'} | {s['seq']} x {s['batch']} | "
                  f"{c['ropex']:.0f} | {r(fl)} | {r(cu)} | {r(c['ropex'] / fl if fl else None, 2)} | "
                  f"{r(c['ropex'] / cu if cu else None, 2)} | {100 * c.get('fused_rope_overhead', float('nan')):+.1f}% / "
                  f"{100 * c.get('fused_rope_in_kernel_overhead', float('nan')):+.1f}% |")
    md += ["", "### Decode (bf16, batch 1, one query token, 32 query heads; effective GB/s of K+V bytes)", "",
           "| heads q/kv | KV length | ropex (head-major, as the peers) | mma.sync / TMA kernel (head-major) | token-major: default / CUDA-core / mma.sync / TMA | SDPA flash | SDPA cuDNN | ropex / best SDPA | ropex / read bw |",
           "|---|---|---|---|---|---|---|---|---|"]
    for c, pe, modes in rows:
        if c["op"] != "decode":
            continue
        s = c["shape"]
        best = max([x for x in (pe.get("sdpa_flash"), pe.get("sdpa_cudnn")) if x] or [0]) or None
        gqa = "" if s["heads_q"] == s["heads_kv"] else f" ({modes.get('sdpa_flash', '?')}/{modes.get('sdpa_cudnn', '?')})"
        md.append(f"| {s['heads_q']}/{s['heads_kv']}{gqa} | {s['kv_len']} | {c['ropex']:.0f} | "
                  f"{r(c.get('ropex_head_major_tensor_core'))} / "
                  f"{r(c.get('ropex_head_major_tma'))} | "
                  f"{r(c.get('ropex_token_major'))} / {r(c.get('ropex_cuda_core'))} / {r(c.get('ropex_tensor_core'))} / "
                  f"{r(c.get('ropex_token_major_tma'))} | "
                  f"{r(pe.get('sdpa_flash'))} | "
                  f"{r(pe.get('sdpa_cudnn'))} | {r(c['ropex'] / best if best else None, 2)} | "
                  f"{100 * c['ropex'] / bw['read_bandwidth']:.0f}% |")
    md += ["", "### RoPE (bf16, 16K tokens x 32 query heads, in place on q and k; GB/s of q+k read and written)", "",
           "| heads q/kv | layout | ropex | rotation by a table made earlier | torch eager | torch.compile | ropex / compile | ropex / copy bw |",
           "|---|---|---|---|---|---|---|---|"]
    for c, pe, modes in rows:
        if c["op"] != "rope":
            continue
        s = c["shape"]
        comp = pe.get("torch_rope")
        md.append(f"| {s['heads_q']}/{s['heads_kv']} | {s['layout']} | {c['ropex']:.0f} | {r(c.get('gbps_apply_table'))} | "
                  f"{r(pe.get('torch_rope_eager'))} | "
                  f"{r(comp)} | {r(c['ropex'] / comp if comp else None, 2)} | "
                  f"{100 * c['ropex'] / bw['copy_bandwidth']:.0f}% |")
    text = "\n".join(md) + "\n"
    with open(os.path.join(args.out_dir, "gpu_table.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
