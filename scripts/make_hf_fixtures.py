#!/usr/bin/env python3
"""Builds the Hugging Face parity fixtures in tests/fixtures/hf/ (run on the CPU, a few seconds).

One tiny random-weight LlamaForCausalLM (fp32, GQA 4 query heads / 2 KV heads, head_dim 32 set
explicitly != hidden/heads, vocab 256, 2 layers, hidden 64, untied lm_head) is saved once with
save_pretrained (safetensors); every RoPE variant reuses those weights with its own config, in both
config formats:
  <variant>.config.json          transformers' own save_pretrained output (rope_parameters format)
  <variant>.legacy.config.json   the pre-v5 format: top-level rope_theta + rope_scaling {"type": ...}
and HF's eager-attention logits for TOKENS are saved as <variant>.logits.npy / <variant>.legacy.logits.npy
(float32 [len(TOKENS), vocab]), each from a model built from that exact config file.
Also a bf16 checkpoint (bf16/): the same architecture with bf16-stored weights; bf16.ref.logits.npy is
HF's fp32 forward of those bf16 weights upcast (what ropex computes: weights bf16, math fp32) and
bf16.hf_bf16.logits.npy is HF's all-bf16 forward (documents the bf16 arithmetic error only).
The test (tests/test_hf_parity.cpp) assembles a model dir per variant from weights + config.
"""
import copy
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "hf")
SEQ = 48
MAX_POS = 32          # < SEQ so dynamic NTK and longrope's long factors kick in
ORIG = 16             # original_max_position_embeddings for yarn / llama3 / longrope
HEAD_DIM = 32

BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=HEAD_DIM,
            max_position_embeddings=MAX_POS, rms_norm_eps=1e-5, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2, attention_bias=False, mlp_bias=False)

rng = np.random.default_rng(0)
half = HEAD_DIM // 2
LONG = [float(x) for x in np.round(1.0 + 3.0 * np.linspace(0, 1, half) ** 2 + rng.uniform(0, 0.2, half), 4)]
SHORT = [float(x) for x in np.round(1.0 + 0.5 * np.linspace(0, 1, half) + rng.uniform(0, 0.05, half), 4)]

# variant -> (rope_theta, rope scaling dict or None). The scaling dicts are given without rope_theta.
VARIANTS = {
    "default": (10000.0, None),
    "base1e6": (1e6, None),
    "base500": (500.0, None),
    "linear": (10000.0, {"rope_type": "linear", "factor": 4.0}),
    "dynamic": (10000.0, {"rope_type": "dynamic", "factor": 2.0}),
    "yarn": (10000.0, {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": ORIG,
                       "beta_fast": 32.0, "beta_slow": 1.0}),
    "yarn_mscale": (10000.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIG,
                              "mscale": 1.0, "mscale_all_dim": 0.5}),
    "llama3": (500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": ORIG}),
    "longrope": (10000.0, {"rope_type": "longrope", "long_factor": LONG, "short_factor": SHORT,
                           "original_max_position_embeddings": ORIG}),
}

TOKENS = [1] + [int(t) for t in np.random.default_rng(1).integers(3, 256, SEQ - 1)]


def run(model_dir):
    model = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([TOKENS]), use_cache=False).logits[0]
    return out.float().numpy()


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    torch.manual_seed(0)
    cfg = LlamaConfig(**BASE, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    model = LlamaForCausalLM(cfg)
    # Larger-than-init weights so the logits are not flat and rope errors show in them.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 / p.shape[-1] ** 0.5) * 2.0)
    weights_dir = os.path.join(OUT, "weights")
    model.save_pretrained(weights_dir, safe_serialization=True)
    os.remove(os.path.join(weights_dir, "config.json"))
    for f in os.listdir(weights_dir):
        if f not in ("model.safetensors",):
            os.remove(os.path.join(weights_dir, f))

    with tempfile.TemporaryDirectory() as tmp:
        for name, (theta, scaling) in VARIANTS.items():
            params = {"rope_type": "default", "rope_theta": theta} if scaling is None else dict(scaling, rope_theta=theta)
            vcfg = LlamaConfig(**BASE, rope_parameters=copy.deepcopy(params))
            d = os.path.join(tmp, name)
            vcfg.save_pretrained(d)
            shutil.copy(os.path.join(weights_dir, "model.safetensors"), d)
            shutil.copy(os.path.join(d, "config.json"), os.path.join(OUT, f"{name}.config.json"))
            new_logits = run(d)
            np.save(os.path.join(OUT, f"{name}.logits.npy"), new_logits)

            # Legacy format: top-level rope_theta, rope_scaling {"type": ...} (no rope_parameters).
            with open(os.path.join(d, "config.json")) as f:
                legacy = json.load(f)
            legacy.pop("rope_parameters", None)
            legacy["rope_theta"] = theta
            if scaling is not None:
                s = dict(scaling)
                s["type"] = s.pop("rope_type")
                legacy["rope_scaling"] = s
            dl = os.path.join(tmp, name + "_legacy")
            os.makedirs(dl)
            with open(os.path.join(dl, "config.json"), "w") as f:
                json.dump(legacy, f, indent=2)
            shutil.copy(os.path.join(weights_dir, "model.safetensors"), dl)
            shutil.copy(os.path.join(dl, "config.json"), os.path.join(OUT, f"{name}.legacy.config.json"))
            old_logits = run(dl)
            np.save(os.path.join(OUT, f"{name}.legacy.logits.npy"), old_logits)
            print(f"{name:12s} max|logit| {np.abs(new_logits).max():.3f}  "
                  f"legacy-vs-new {np.abs(new_logits - old_logits).max():.2e}  "
                  f"vs default {np.abs(new_logits - np.load(os.path.join(OUT, 'default.logits.npy'))).max():.3f}")

        # bf16 checkpoint: same architecture (default rope), weights rounded to bf16 and stored as bf16.
        bdir = os.path.join(OUT, "bf16")
        bmodel = LlamaForCausalLM(LlamaConfig(**BASE, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}))
        bmodel.load_state_dict(model.state_dict())
        bmodel = bmodel.to(torch.bfloat16)
        bmodel.save_pretrained(bdir, safe_serialization=True)
        for f in os.listdir(bdir):
            if f not in ("model.safetensors", "config.json"):
                os.remove(os.path.join(bdir, f))
        np.save(os.path.join(OUT, "bf16.ref.logits.npy"), run(bdir))  # bf16 weights, fp32 math
        m16 = LlamaForCausalLM.from_pretrained(bdir, attn_implementation="eager", dtype=torch.bfloat16).eval()
        with torch.no_grad():
            l16 = m16(torch.tensor([TOKENS]), use_cache=False).logits[0].float().numpy()
        np.save(os.path.join(OUT, "bf16.hf_bf16.logits.npy"), l16)
        print(f"bf16: |hf_bf16 - ref| max {np.abs(l16 - np.load(os.path.join(OUT, 'bf16.ref.logits.npy'))).max():.4f}")

    np.save(os.path.join(OUT, "tokens.npy"), np.array(TOKENS, dtype=np.int64))
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("Generated by scripts/make_hf_fixtures.py (transformers %s, torch %s); see its docstring.\n"
                % (__import__("transformers").__version__, torch.__version__))
    total = sum(os.path.getsize(os.path.join(r, x)) for r, _, fs in os.walk(OUT) for x in fs)
    print(f"total fixture size {total / 1e6:.2f} MB")


if __name__ == "__main__":
    sys.exit(main())
