#!/usr/bin/env python3
"""Check an exported checkpoint three ways on the same tokens (CPU, fp32):
this experiment's PyTorch model (train.py), Hugging Face LlamaForCausalLM, and `ropex logits`.
Usage: check_export.py CKPT_DIR ROPEX_BINARY [n_tokens]
Prints the max |logit difference| of each pair; exits 1 if HF and ropex disagree by > 1e-3
relative to the logit scale."""
import json, os, subprocess, sys, tempfile
import numpy as np
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train as T

ckpt, ropex = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 300
cfg = json.load(open(os.path.join(ckpt, "config.json")))
data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
ids = np.fromfile(os.path.join(data, "emma.u16"), np.uint16)[1000:1000 + n].astype(np.int64)

from safetensors.torch import load_file
sd = {k: v.float() for k, v in load_file(os.path.join(ckpt, "model.safetensors")).items()}
m = T.Llama(T.ARCH).float().eval()
m.load_state_dict(sd)
with torch.no_grad():
    cos, sin = T.rope_cos_sin(cfg["rope_theta"], n, T.ARCH["head_dim"], "cpu")
    ours = m(torch.from_numpy(ids)[None], cos, sin)[0].numpy()

import transformers
hf = transformers.LlamaForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32).eval()
with torch.no_grad():
    ref = hf(torch.from_numpy(ids)[None]).logits[0].float().numpy()

with tempfile.TemporaryDirectory() as td:
    np.save(os.path.join(td, "ids.npy"), ids.astype(np.int32))
    subprocess.run([ropex, "logits", "--model", ckpt, "--tokens", os.path.join(td, "ids.npy"),
                    "--out", os.path.join(td, "logits.npy")], check=True)
    rx = np.load(os.path.join(td, "logits.npy"))
scale = np.abs(ref).max()
d_ours, d_rx = np.abs(ours - ref).max(), np.abs(rx - ref).max()
print(f"logit scale {scale:.3f}; max|ours-HF| {d_ours:.2e}; max|ropex-HF| {d_rx:.2e}; "
      f"argmax agreement ropex/HF {np.mean(rx.argmax(-1) == ref.argmax(-1)):.4f}")
sys.exit(0 if d_rx <= 1e-3 * scale and d_ours <= 1e-3 * scale else 1)
