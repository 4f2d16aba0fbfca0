#!/usr/bin/env python3
"""HF transformers peer for bench/gpu/llama7b.cu, on the same card in the same run.

Makes a LLaMA-2-7B-shaped LlamaForCausalLM with random bf16 weights on the GPU (sdpa attention),
saves it (safetensors) for ropex to load — both then run the very same weights — plus a copy of
the config with only the first few layers (for the 1M-token run), and times HF:
  prefill 4K / 16K tokens: model(ids, logits_to_keep=1), tok/s (median of repeats, after warm-up)
  decode at 4K context: one token at a time with the DynamicCache, ms/token (median of 32 steps)
and writes the logits of a 256-token prompt for the parity check: the bf16 model's, and (after the
timings) the same weights run in fp32, the reference both bf16 forwards are measured against.

    python3 bench/gpu/llama7b_hf.py --dir /tmp/llama7b --out hf.json [--few-layers 2] [--quick]
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


def sync_time():
    torch.cuda.synchronize()
    return time.perf_counter()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--few-layers", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--save-only", action="store_true", help="make and save the model; no HF timings")
    args = ap.parse_args()

    cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
                      eos_token_id=2, attn_implementation="sdpa")
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    t0 = time.perf_counter()
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    model.eval()
    # Random init with std 0.02 (HF's initializer_range); RMSNorm weights 1.
    init_s = sync_time() - t0
    out = {"torch": torch.__version__, "transformers": transformers.__version__, "card": torch.cuda.get_device_name(),
           "init_seconds": init_s}

    t0 = time.perf_counter()
    model.save_pretrained(args.dir, safe_serialization=True)
    out["save_seconds"] = time.perf_counter() - t0
    # The few-layer copy: same weight files, config with fewer layers (ropex reads only those).
    few = args.dir.rstrip("/") + f"_L{args.few_layers}"
    os.makedirs(few, exist_ok=True)
    for f in os.listdir(args.dir):
        if f.endswith(".safetensors") or f.endswith(".index.json"):
            dst = os.path.join(few, f)
            if not os.path.exists(dst):
                os.symlink(os.path.join(os.path.abspath(args.dir), f), dst)
    with open(os.path.join(args.dir, "config.json")) as f:
        c = json.load(f)
    c["num_hidden_layers"] = args.few_layers
    with open(os.path.join(few, "config.json"), "w") as f:
        json.dump(c, f, indent=1)
    print(f"HF: init {init_s:.1f} s, saved to {args.dir} in {out['save_seconds']:.1f} s", flush=True)
    if args.save_only:
        return

    gen = torch.Generator(device="cuda").manual_seed(1)
    with torch.no_grad():
        # Parity prompt: fp32 logits of the bf16 model.
        ids = torch.randint(3, cfg.vocab_size, (1, 256), device="cuda", generator=gen)
        np.save(os.path.join(args.dir, "parity_tokens.npy"), ids[0].to(torch.int32).cpu().numpy())
        logits = model(ids).logits[0].float().cpu().numpy()
        np.save(os.path.join(args.dir, "parity_hf_logits.npy"), logits)

        reps = 1 if args.quick else 3
        prefill = {}
        for n in (4096, 8192 if args.quick else 16384):
            x = torch.randint(3, cfg.vocab_size, (1, n), device="cuda", generator=gen)
            model(x, logits_to_keep=1, use_cache=False)  # warm-up
            ts = []
            for _ in range(reps):
                t = sync_time()
                model(x, logits_to_keep=1, use_cache=False).logits.float().cpu()
                ts.append(sync_time() - t)
            prefill[str(n)] = n / statistics.median(ts)
            print(f"HF prefill {n}: {prefill[str(n)]:.0f} tok/s", flush=True)
            del x
            torch.cuda.empty_cache()
        out["prefill_tok_s"] = prefill

        ctx = 4096
        steps = 4 + (8 if args.quick else 32)
        x = torch.randint(3, cfg.vocab_size, (1, ctx + steps), device="cuda", generator=gen)
        r = model(x[:, :ctx], use_cache=True, logits_to_keep=1)
        cache = r.past_key_values
        ts = []
        for i in range(steps):  # greedy-decode style: one token, its logits to the host (context 4096 + i)
            t = sync_time()
            o = model(x[:, ctx + i:ctx + i + 1], past_key_values=cache, use_cache=True)
            o.logits.float().cpu()
            ts.append(sync_time() - t)
        out["decode_ms"] = {str(ctx): 1e3 * statistics.median(ts[4:])}
        print(f"HF decode at {ctx}: {out['decode_ms'][str(ctx)]:.2f} ms/token", flush=True)
        out["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9

        # The float reference for the parity check: the same weights in fp32 (eager attention).
        del cache, r, o, x
        torch.cuda.empty_cache()
        model = model.float()
        model.config._attn_implementation = "eager"
        torch.backends.cuda.matmul.allow_tf32 = False
        logits32 = model(ids).logits[0].float().cpu().numpy()
        np.save(os.path.join(args.dir, "parity_hf32_logits.npy"), logits32)
        print("HF fp32 parity logits saved", flush=True)

    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
