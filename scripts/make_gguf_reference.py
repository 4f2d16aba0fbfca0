#!/usr/bin/env python3
"""Reference logits of a GGUF model from Hugging Face transformers, for tests/test_gguf_model.cpp.

transformers loads the GGUF itself (dequantizing every tensor to float32 and, for the `llama`
architecture, undoing llama.cpp's Q/K row permutation), tokenizes a real text with the tokenizer
rebuilt from the same file's metadata, and runs one eager fp32 forward over the first N tokens.

Writes into --out (default tests/fixtures/gguf_model/):
  <stem>.tokens.npy   int32 [N]          token ids of the text's first N tokens
  <stem>.nll.npy      float64 [N-1]      -log softmax(logits[i])[tokens[i+1]]
  <stem>.argmax.npy   int32 [N]          argmax of logits[i]
  <stem>.rows.npy     float32 [4, vocab] full logit rows at positions <stem>.json "rows"
  <stem>.json         what was run (versions, text, positions, file size and sha256)

  pip install torch transformers gguf accelerate   # transformers needs accelerate for GGUF files
  scripts/fetch_models.sh
  python3 scripts/make_gguf_reference.py            # SmolLM2-135M-Instruct.Q4_1 on GPL-3
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(root, ".models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "gguf_model"))
    ap.add_argument("--stem", default="smollm2_q4_1")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    d, f = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with open(args.text, encoding="utf-8") as fh:
        text = fh.read()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) < args.tokens:
        sys.exit(f"{args.text}: only {len(ids)} tokens, asked for {args.tokens}")
    ids = ids[: args.tokens]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].to(torch.float32)  # [N, vocab]
    lp = torch.log_softmax(logits.to(torch.float64), dim=-1)
    tgt = torch.tensor(ids[1:])
    nll = -lp[:-1].gather(1, tgt[:, None])[:, 0]
    argmax = logits.argmax(dim=-1).to(torch.int32)
    n = len(ids)
    rows = [0, 1, n // 2, n - 1]

    os.makedirs(args.out, exist_ok=True)
    p = lambda s: os.path.join(args.out, f"{args.stem}.{s}")
    np.save(p("tokens.npy"), np.asarray(ids, dtype=np.int32))
    np.save(p("nll.npy"), nll.numpy().astype(np.float64))
    np.save(p("argmax.npy"), argmax.numpy())
    np.save(p("rows.npy"), logits[rows].numpy().astype(np.float32))
    meta = {
        "model": os.path.basename(args.model),
        "model_bytes": os.path.getsize(args.model),
        "model_sha256": sha256(args.model),
        "text": args.text,
        "text_sha256": sha256(args.text),
        "n_tokens": n,
        "rows": rows,
        "mean_nll": float(nll.mean()),
        "reference": "transformers AutoModelForCausalLM.from_pretrained(gguf_file=...), float32, eager attention, CPU",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "config": {k: v for k, v in model.config.to_dict().items()
                   if k in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                            "num_key_value_heads", "rope_theta", "rope_parameters", "rms_norm_eps",
                            "tie_word_embeddings", "max_position_embeddings")},
    }
    with open(p("json"), "w") as fh:
        json.dump(meta, fh, indent=2, default=str)
        fh.write("\n")
    print(f"{args.stem}: {n} tokens, mean NLL {meta['mean_nll']:.4f}, wrote {args.out}")


if __name__ == "__main__":
    main()
