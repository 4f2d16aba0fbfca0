#!/usr/bin/env python3
"""Builds the model-family parity fixtures in tests/fixtures/families/ (CPU, a few seconds).

For each family ropex runs, a tiny random-weight checkpoint made by transformers' own class for that
model_type (2 layers, hidden 64, 4 query / 2 KV heads, vocab 128), its weights stored in bf16 so
the files stay small, and HF's eager fp32 logits of the same bf16 weights (what ropex computes:
weights bf16, math fp32) for TOKENS:
  <name>/config.json + model.safetensors   save_pretrained output (transformers' current format)
  <name>.legacy.config.json                the same config as hub files written before transformers 5
                                           look: top-level rope_theta + rope_scaling, no layer_types
  <name>.logits.npy                        float32 [len(TOKENS), vocab], one forward over TOKENS
  <name>.decode.logits.npy                 the same rows from HF's incremental decoding: a 5-token
                                           prompt, then one token per call through its KV cache
                                           (differs from one forward only where HF's RoPE depends on
                                           the call's length: longrope's short/long switch)
The feature each fixture exercises (window 8 and 20 < 48 tokens, longrope past its 16-token L0,
biases and norms well away from 0/1) changes the logits by far more than the 1e-3 parity bound;
tests/test_families.cpp checks that too, by switching the feature off in ropex.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers as tf

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "families")
SEQ = 48
BASE = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=[2, 3])

rng = np.random.default_rng(0)
LONG = [float(x) for x in np.round(1.0 + 3.0 * np.linspace(0, 1, 8) ** 2 + rng.uniform(0, 0.2, 8), 4)]
SHORT = [float(x) for x in np.round(1.0 + 0.5 * np.linspace(0, 1, 8) + rng.uniform(0, 0.05, 8), 4)]

# name -> (config class, model class, extra config kwargs, legacy rope dict or None)
FAMILIES = {
    # Llama 3 style: attention_bias (q, k, v, o) and mlp_bias, rope_theta 500000, several eos ids
    "llama_bias": ("LlamaConfig", "LlamaForCausalLM",
                   dict(attention_bias=True, mlp_bias=True, max_position_embeddings=64,
                        rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), None),
    # SmolLM2: plain llama with tied embeddings
    "smollm2": ("LlamaConfig", "LlamaForCausalLM",
                dict(tie_word_embeddings=True, max_position_embeddings=64,
                     rope_parameters={"rope_type": "default", "rope_theta": 100000.0}), None),
    # Mistral: every layer a sliding window of 8 keys
    "mistral": ("MistralConfig", "MistralForCausalLM",
                dict(sliding_window=8, max_position_embeddings=64,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), None),
    # Qwen2: q/k/v biases by model type; sliding window on layers >= max_window_layers = 1
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(use_sliding_window=True, sliding_window=8, max_window_layers=1, max_position_embeddings=64,
                   rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}), None),
    # Qwen3: per-head q/k RMSNorm before RoPE, head_dim 32 != hidden / heads
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM",
              dict(head_dim=32, max_position_embeddings=64,
                   rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}), None),
    # Phi-3: fused qkv_proj / gate_up_proj, longrope (L0 16 < 48 tokens: long factors), window 20
    "phi3": ("Phi3Config", "Phi3ForCausalLM",
             dict(max_position_embeddings=32, original_max_position_embeddings=16, sliding_window=20,
                  pad_token_id=0,
                  rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": SHORT,
                                   "long_factor": LONG}),
             {"type": "longrope", "short_factor": SHORT, "long_factor": LONG}),
}

TOKENS = [1] + [int(t) for t in np.random.default_rng(1).integers(4, 128, SEQ - 1)]


def logits(model_dir, cls):
    model = getattr(tf, cls).from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([TOKENS]), use_cache=False).logits[0].float().numpy()


def decode_logits(model_dir, cls, prompt=5):
    model = getattr(tf, cls).from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    rows = []
    with torch.no_grad():
        out = model(torch.tensor([TOKENS[:prompt]]), use_cache=True)
        rows.append(out.logits[0])
        past = out.past_key_values
        for t in range(prompt, len(TOKENS)):
            out = model(torch.tensor([[TOKENS[t]]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            rows.append(out.logits[0])
    return torch.cat(rows).float().numpy()


def legacy(cfg, rope_scaling):
    """The config as a pre-transformers-5 hub file: top-level rope_theta (+ rope_scaling)."""
    old = dict(cfg)
    rp = old.pop("rope_parameters")
    old["rope_theta"] = rp["rope_theta"]
    if rope_scaling is not None:
        old["rope_scaling"] = rope_scaling
    if old.get("model_type") in ("qwen2", "qwen3"):
        old.pop("layer_types", None)  # hub Qwen2.5 files: use_sliding_window + max_window_layers only
    return old


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    torch.manual_seed(0)
    for name, (cfg_cls, model_cls, extra, rope_scaling) in FAMILIES.items():
        cfg = getattr(tf, cfg_cls)(**BASE, **extra)
        model = getattr(tf, model_cls)(cfg)
        with torch.no_grad():  # larger-than-init weights, so every feature shows in the logits
            for pname, p in model.named_parameters():
                if pname.endswith("norm.weight"):
                    p.copy_(1.0 + 0.3 * torch.randn_like(p))
                elif pname.endswith(".bias"):
                    p.copy_(0.5 * torch.randn_like(p))
                else:
                    p.copy_(torch.randn_like(p) * (1.0 / p.shape[-1] ** 0.5))
        d = os.path.join(OUT, name)
        model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
        for f in os.listdir(d):
            if f not in ("model.safetensors", "config.json"):
                os.remove(os.path.join(d, f))
        out = logits(d, model_cls)
        np.save(os.path.join(OUT, f"{name}.logits.npy"), out)
        dec = decode_logits(d, model_cls)
        np.save(os.path.join(OUT, f"{name}.decode.logits.npy"), dec)
        with open(os.path.join(d, "config.json")) as f:
            saved = json.load(f)
        old = legacy(saved, rope_scaling)
        with open(os.path.join(OUT, f"{name}.legacy.config.json"), "w") as f:
            json.dump(old, f, indent=2)
        # The legacy file must mean the same model to HF too.
        tmp = os.path.join(OUT, "_legacy")
        os.makedirs(tmp)
        shutil.copy(os.path.join(d, "model.safetensors"), tmp)
        shutil.copy(os.path.join(OUT, f"{name}.legacy.config.json"), os.path.join(tmp, "config.json"))
        diff = np.abs(logits(tmp, model_cls) - out).max()
        shutil.rmtree(tmp)
        assert diff == 0.0, f"{name}: legacy config changes HF's logits by {diff}"
        print(f"{name:10s} max|logit| {np.abs(out).max():.3f}  decode vs one forward {np.abs(dec - out).max():.2e}")
    np.save(os.path.join(OUT, "tokens.npy"), np.array(TOKENS, dtype=np.int64))
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("Generated by scripts/make_family_fixtures.py (transformers %s, torch %s); see its docstring.\n"
                % (tf.__version__, torch.__version__))
    total = sum(os.path.getsize(os.path.join(r, x)) for r, _, fs in os.walk(OUT) for x in fs)
    print(f"total fixture size {total / 1e6:.2f} MB")


if __name__ == "__main__":
    sys.exit(main())
