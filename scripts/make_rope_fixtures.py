#!/usr/bin/env python3
"""Reference RoPE values from Hugging Face transformers, for tests/test_rope_hf.cpp.

For each variant, builds a LlamaConfig from a config dict (legacy rope_theta + rope_scaling, or
rope_parameters), asks transformers' own rotary code for inv_freq and attention_factor (at one or
more sequence lengths for dynamic / longrope), and rotates random q with apply_rotary_pos_emb.
Writes tests/fixtures/rope/hf_rope.json. Run: python3 scripts/make_rope_fixtures.py
"""
import json, math, os, sys
import torch
import transformers
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

torch.manual_seed(0)
HEAD_DIM = 64
base_cfg = dict(hidden_size=HEAD_DIM * 4, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=256, num_hidden_layers=1, vocab_size=64, max_position_embeddings=2048)

long_f = [1.0 + 0.05 * i for i in range(HEAD_DIM // 2)]
short_f = [1.0 + 0.01 * i for i in range(HEAD_DIM // 2)]
cases = [
    ("default_10000", {"rope_theta": 10000.0}, [None]),
    ("default_500", {"rope_theta": 500.0}, [None]),
    ("default_1e6_params", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}, [None]),
    ("linear_4", {"rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 4.0}}, [None]),
    ("linear_2_params", {"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}}, [None]),
    ("dynamic_2", {"rope_theta": 10000.0, "rope_scaling": {"type": "dynamic", "factor": 2.0}}, [1000, 2048, 4096, 16384]),
    ("yarn_16", {"rope_theta": 10000.0, "rope_scaling": {"rope_type": "yarn", "factor": 16.0,
                 "original_max_position_embeddings": 2048}}, [None]),
    ("yarn_mscale", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                 "mscale": 1.0, "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1,
                 "original_max_position_embeddings": 512}, "max_position_embeddings": 20480}, [None]),
    ("yarn_notrunc", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 50000.0, "factor": 4.0,
                 "truncate": False, "original_max_position_embeddings": 2048}}, [None]),
    ("llama3", {"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 256}}, [None]),
    ("llama3_params", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 1024}}, [None]),
    ("longrope", {"rope_theta": 10000.0, "max_position_embeddings": 8192,
                  "rope_scaling": {"rope_type": "longrope", "long_factor": long_f, "short_factor": short_f,
                                   "original_max_position_embeddings": 2048}}, [1000, 4096]),
]

def f32(t):
    return [float("%.9g" % v) for v in t[0].transpose(0, 1).reshape(-1).tolist()]


out = {"transformers": transformers.__version__, "torch": torch.__version__, "head_dim": HEAD_DIM, "cases": []}
for name, extra, seq_lens in cases:
    cfg_dict = dict(base_cfg)
    cfg_dict.update(extra)
    config = LlamaConfig(**cfg_dict)
    rope_type = config.rope_parameters["rope_type"]
    entries = []
    for seq_len in seq_lens:
        if rope_type == "default":
            inv, att = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
        else:
            inv, att = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu", seq_len=seq_len)
        entries.append({"seq_len": seq_len or 0, "inv_freq": [float("%.10g" % v) for v in inv.double().tolist()], "attention_factor": float(att)})
    # Rotate random q through the model's own rotary module (positions 0..47 and a shifted block).
    rot = LlamaRotaryEmbedding(config)
    pos = torch.cat([torch.arange(0, 12), torch.arange(1000, 1012)])[None, :]
    q = torch.randn(1, 1, pos.shape[1], HEAD_DIM)
    cos, sin = rot(q, pos)
    q_rot, _ = apply_rotary_pos_emb(q, q, cos, sin)
    out["cases"].append({
        "name": name, "config": cfg_dict, "rope_type": rope_type, "values": entries,
        "apply": {"positions": pos[0].tolist(), "q": f32(q),
                  "q_rot": f32(q_rot), "heads": 1},
    })

path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "rope", "hf_rope.json")
with open(path, "w") as f:
    json.dump(out, f)
print("wrote", path, "transformers", transformers.__version__)
