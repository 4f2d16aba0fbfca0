#!/usr/bin/env python3
"""HF transformers' own bf16 logits on stories260K: the peer the CUDA bf16 path is held to.

stories260K (llama2.c format, ../shared/data) is converted to an HF LlamaForCausalLM (q/k rows
permuted from llama2.c's interleaved RoPE pairs to HF's rotate-half layout), its greedy
continuation of BOS is computed in fp32 (the text tests/cuda/test_cuda_llama.cu scores), and HF's
logits on it are saved in fp32 and in bf16 (model.to(bfloat16), CPU). Also printed: how far bf16
alone moves the logits (HF bf16 vs fp32; fp32 with only the weights rounded to bf16).

    python3 scripts/make_stories_bf16_fixture.py [--bin ../shared/data/stories260K.bin]
        [--out tests/fixtures/stories260K] [--ropex build/bin/ropex]   (--ropex: cross-check fp32)
"""
import argparse
import hashlib
import json
import os
import struct
import subprocess
import tempfile

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def load_llama2c(path):
    raw = open(path, "rb").read()
    dim, hidden, layers, heads, kv, vocab, seq = struct.unpack("7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    w = np.frombuffer(raw[28:], dtype=np.float32)
    off = 0

    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        a = torch.from_numpy(w[off:off + n].reshape(shape).copy())
        off += n
        return a

    hd = dim // heads
    t = dict(emb=take(vocab, dim), att_norm=take(layers, dim), wq=take(layers, heads * hd, dim),
             wk=take(layers, kv * hd, dim), wv=take(layers, kv * hd, dim), wo=take(layers, dim, heads * hd),
             ffn_norm=take(layers, dim), w1=take(layers, hidden, dim), w2=take(layers, dim, hidden),
             w3=take(layers, hidden, dim), norm=take(dim))
    off += seq * hd  # the two legacy RoPE tables
    t["cls"] = t["emb"] if shared else take(vocab, dim)
    cfg = dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv=kv, vocab=vocab, seq=seq)
    return cfg, t


def interleaved_to_half(w, n_heads):
    # rows (2i, 2i+1) of each head -> rows (i, i + hd/2): the HF conversion of Meta's q/k weights
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="../shared/data/stories260K.bin")
    ap.add_argument("--out", default="tests/fixtures/stories260K")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--ropex", default=None)
    args = ap.parse_args()

    c, t = load_llama2c(args.bin)
    config = LlamaConfig(vocab_size=c["vocab"], hidden_size=c["dim"], intermediate_size=c["hidden"],
                         num_hidden_layers=c["layers"], num_attention_heads=c["heads"], num_key_value_heads=c["kv"],
                         max_position_embeddings=c["seq"], rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    model = LlamaForCausalLM(config).eval()
    sd = {"model.embed_tokens.weight": t["emb"], "model.norm.weight": t["norm"], "lm_head.weight": t["cls"]}
    for l in range(c["layers"]):
        p = f"model.layers.{l}."
        sd[p + "input_layernorm.weight"] = t["att_norm"][l]
        sd[p + "post_attention_layernorm.weight"] = t["ffn_norm"][l]
        sd[p + "self_attn.q_proj.weight"] = interleaved_to_half(t["wq"][l], c["heads"])
        sd[p + "self_attn.k_proj.weight"] = interleaved_to_half(t["wk"][l], c["kv"])
        sd[p + "self_attn.v_proj.weight"] = t["wv"][l]
        sd[p + "self_attn.o_proj.weight"] = t["wo"][l]
        sd[p + "mlp.gate_proj.weight"] = t["w1"][l]
        sd[p + "mlp.down_proj.weight"] = t["w2"][l]
        sd[p + "mlp.up_proj.weight"] = t["w3"][l]
    model.load_state_dict(sd, strict=True)

    with torch.no_grad():
        seq = [1]
        while len(seq) < args.tokens:  # greedy continuation of BOS, fp32
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
        ids = torch.tensor([seq])
        f32 = model(ids).logits[0].double()
        bf = LlamaForCausalLM(config).eval()
        bf.load_state_dict(model.state_dict())
        bf16 = bf.to(torch.bfloat16)(ids).logits[0].double()
        wonly = LlamaForCausalLM(config).eval()
        wonly.load_state_dict({k: v.bfloat16().float() for k, v in model.state_dict().items()})
        wlog = wonly(ids).logits[0].double()

    def cmp(a, b):
        return float(((a - b) ** 2).sum() / (b ** 2).sum()), float((a.argmax(1) == b.argmax(1)).double().mean())

    stats = {"hf_bf16_vs_fp32": cmp(bf16, f32), "bf16_weights_only_vs_fp32": cmp(wlog, f32)}
    for k, (nmse, top1) in stats.items():
        print(f"{k}: NMSE {nmse:.3e}, top-1 agreement {100 * top1:.1f}%")

    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "tokens.npy"), np.array(seq, dtype=np.int32))
    np.save(os.path.join(args.out, "hf_bf16.logits.npy"), bf16.float().numpy())
    meta = {"source": os.path.basename(args.bin), "md5": hashlib.md5(open(args.bin, "rb").read()).hexdigest(),
            "torch": torch.__version__, "transformers": __import__("transformers").__version__,
            "tokens": len(seq), "device": "cpu", **{k: {"nmse": v[0], "top1": v[1]} for k, v in stats.items()}}
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")

    if args.ropex:  # the conversion is right iff ropex (llama2.c layout) gives HF's fp32 logits
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([args.ropex, "logits", "--model", args.bin, "--tokens", os.path.join(args.out, "tokens.npy"),
                            "--out", os.path.join(d, "r.npy")], check=True)
            r = torch.from_numpy(np.load(os.path.join(d, "r.npy"))).double()
        print(f"ropex cpu vs HF fp32: max abs {float((r - f32).abs().max()):.2e}")


if __name__ == "__main__":
    main()
