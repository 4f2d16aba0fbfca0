#!/usr/bin/env python3
"""PyTorch peers for bench_gpu, on the same card in the same run, same sizes and timing rules:
SDPA with the FLASH_ATTENTION and CUDNN_ATTENTION backends (prefill and decode), and HF's
rotate_half RoPE (eager and torch.compile). CUDA events around each call, warm-up, median of
repeats, inputs rotated across sets beyond L2. Writes one JSON object.

    python3 bench/gpu/peers.py --out peers.json [--quick]
"""
import argparse
import os
import json
import math
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

QUICK = False


def median_ms(fn, warmup=5, reps=30):
    if QUICK:
        warmup, reps = 1, 3
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for i, (a, b) in enumerate(ev):
        a.record()
        fn(warmup + i)
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in ev)


def sdpa(backend, q, k, v, causal):
    """SDPA on one backend; GQA through enable_gqa when the backend takes it, else K/V expanded
    (the expansion is outside the timed call; the bytes it makes the kernel read are not)."""
    with sdpa_kernel(backend):
        try:
            F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=q.shape[1] != k.shape[1])
            return (lambda qq, kk, vv: F.scaled_dot_product_attention(
                qq, kk, vv, is_causal=causal, enable_gqa=qq.shape[1] != kk.shape[1])), "enable_gqa"
        except RuntimeError:
            if q.shape[1] == k.shape[1]:
                raise
            g = q.shape[1] // k.shape[1]
            return (lambda qq, kk, vv: F.scaled_dot_product_attention(
                qq, kk.repeat_interleave(g, 1), vv.repeat_interleave(g, 1), is_causal=causal)), "expanded"


BACKENDS = {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION}


def timed_sdpa(name, qs, ks, vs, causal):
    backend = BACKENDS[name]
    try:
        fn, mode = sdpa(backend, qs[0], ks[0], vs[0], causal)
        if mode == "expanded":  # expand once per set so only the attention kernel is timed
            g = qs[0].shape[1] // ks[0].shape[1]
            ks = [k.repeat_interleave(g, 1) for k in ks]
            vs = [v.repeat_interleave(g, 1) for v in vs]
        with sdpa_kernel(backend):
            ms = median_ms(lambda i: F.scaled_dot_product_attention(
                qs[i % len(qs)], ks[i % len(ks)], vs[i % len(vs)], is_causal=causal,
                enable_gqa=qs[0].shape[1] != ks[0].shape[1]))
        return ms, mode
    except Exception as e:  # a backend that refuses the shape: report it, don't stop the run
        print(f"{name}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
        return None, "unsupported"


def prefill_cases():
    out = []
    hq, d, total = 32, 128, 16384
    seqs = [1024, 4096] if QUICK else [1024, 2048, 4096, 8192, 16384]
    for hkv in (32, 8):
        for causal in (False, True):
            for seq in seqs:
                b = total // seq
                q = torch.randn(b, hq, seq, d, device="cuda", dtype=torch.bfloat16) * 2
                k = torch.randn(b, hkv, seq, d, device="cuda", dtype=torch.bfloat16) * 2
                v = torch.randn(b, hkv, seq, d, device="cuda", dtype=torch.bfloat16)
                flops = 4.0 * b * hq * seq * seq * d * (0.5 if causal else 1.0)
                peers, modes = {}, {}
                for name in BACKENDS:
                    ms, mode = timed_sdpa(name, [q], [k], [v], causal)
                    peers[name] = flops / ms / 1e9 if ms else None
                    modes[name] = mode
                shape = dict(batch=b, seq=seq, heads_q=hq, heads_kv=hkv, head_dim=d, causal=causal, dtype="bf16")
                print("prefill", shape, peers, modes, flush=True)
                out.append(dict(op="prefill", shape=shape, peers=peers, modes=modes))
                del q, k, v
    return out


def decode_cases():
    out = []
    hq, d = 32, 128
    lens = [4096, 131072] if QUICK else [4096, 32768, 131072, 524288]
    for hkv in (32, 8):
        for L in lens:
            kv_bytes = 2 * L * hkv * d * 2
            sets = max(1, min(64, math.ceil(400e6 / kv_bytes)))
            qs = [torch.randn(1, hq, 1, d, device="cuda", dtype=torch.bfloat16) * 2 for _ in range(sets)]
            ks = [torch.randn(1, hkv, L, d, device="cuda", dtype=torch.bfloat16) * 2 for _ in range(sets)]
            vs = [torch.randn(1, hkv, L, d, device="cuda", dtype=torch.bfloat16) for _ in range(sets)]
            peers, modes = {}, {}
            for name in BACKENDS:
                ms, mode = timed_sdpa(name, qs, ks, vs, False)
                peers[name] = kv_bytes / ms / 1e6 if ms else None  # effective GB/s of the cache's K+V bytes
                modes[name] = mode
            shape = dict(batch=1, kv_len=L, heads_q=hq, heads_kv=hkv, head_dim=d, dtype="bf16")
            print("decode", shape, peers, modes, flush=True)
            out.append(dict(op="decode", shape=shape, peers=peers, modes=modes))
            del qs, ks, vs
    return out


def rotate_half(x):  # HF transformers' formula
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def rope_cases():
    out = []
    tokens, hq, d = 16384, 32, 128
    inv = 1.0 / (500000.0 ** (torch.arange(0, d, 2, device="cuda", dtype=torch.float32) / d))
    pos = torch.arange(tokens, device="cuda", dtype=torch.float32)
    freqs = torch.outer(pos, inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = emb.cos().to(torch.bfloat16)[:, None, :]  # [tokens, 1, d], broadcast over heads
    sin = emb.sin().to(torch.bfloat16)[:, None, :]
    compiled = torch.compile(apply_rotary_pos_emb)
    for hkv in (32, 8):
        qs = [torch.randn(tokens, hq, d, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
        ks = [torch.randn(tokens, hkv, d, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
        nbytes = 2 * (qs[0].numel() + ks[0].numel()) * 2  # read + write of q and k, as for ropex
        peers = {}
        for name, fn in (("torch_rope_eager", apply_rotary_pos_emb), ("torch_rope", compiled)):
            ms = median_ms(lambda i: fn(qs[i % 2], ks[i % 2], cos, sin))
            peers[name] = nbytes / ms / 1e6
        shape = dict(tokens=tokens, heads_q=hq, heads_kv=hkv, head_dim=d, dtype="bf16", layout="half")
        print("rope", shape, peers, flush=True)
        out.append(dict(op="rope", shape=shape, peers=peers))
    return out


def main():
    global QUICK
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    QUICK = args.quick
    torch.manual_seed(0)
    res = {"torch": torch.__version__, "card": torch.cuda.get_device_name(),
           "cudnn": torch.backends.cudnn.version(), "cases": []}
    # The card's bf16 matrix ceiling (FLOP floor of prefill): an 8192^3 product on random data.
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    res["matmul_bf16_tflops"] = 2 * 8192 ** 3 / median_ms(lambda i: a @ b, 3, 10) / 1e9
    print("matmul bf16 TFLOP/s", res["matmul_bf16_tflops"], flush=True)
    del a, b
    ops = os.environ.get("ROPEX_BENCH_OPS", "rope,decode,prefill").split(",")  # a subset for quick iterations
    for part in (rope_cases, decode_cases, prefill_cases):
        if part.__name__.replace("_cases", "") not in ops:
            continue
        try:
            res["cases"] += part()
        except Exception as e:
            print(f"peers: {part.__name__} failed: {type(e).__name__}: {e}", file=sys.stderr)
        torch.cuda.empty_cache()
        with open(args.out, "w") as f:  # partial results survive a later failure
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
