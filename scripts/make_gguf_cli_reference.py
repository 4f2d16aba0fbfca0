#!/usr/bin/env python3
"""Hugging Face references for ropex's GGUF tokenizers and `ropex generate/perplexity --model x.gguf`
(tests/test_tokenizer.cpp, tests/test_cli_gguf.cpp).

Tokenizers (`tokens` step): for each GGUF that is here, transformers builds a tokenizer from the
file's metadata (`AutoTokenizer.from_pretrained(dir, gguf_file=name)`), which encodes the test texts
of scripts/make_tokenizer_fixtures.py (multilingual, special tokens, whitespace) and GPL-3.
transformers' GGUF loader leaves out part of what llama.cpp does for some `tokenizer.ggml.pre` types
(`smollm`: digits split one by one before the GPT-2 split; `llama-bpe`: `ignore_merges`;
sentencepiece files: the space prefix always added). The reference ids `ids` are that same HF
tokenizer with llama.cpp's rule set in (the regex list of llama-vocab.cpp for the `pre` type, as
HF `Split` steps; `ignore_merges`; sentencepiece's prefix as a `Prepend` normalizer); `hf_gguf`
keeps the ids of transformers' loader as it is, and `same_as_hf_gguf` says whether they agree.
Where llama.cpp ships test vectors for the file (`ggml-vocab-*.gguf.inp/.out`, made from the
original tokenizer.json files), the script checks the reference tokenizer against all of them.

GGUF files:
  smollm2    .models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch_models.sh)
  llama-bpe, qwen2, gpt-2, llama-spm, phi-3
             vendor/llama.cpp/models/ggml-vocab-<name>.gguf of the llama-cpp-python 0.3.36 sdist
             (.models/src/, downloaded by scripts/make_tokenizer_fixtures.py fetch); the ones under
             1 MB (llama-spm, phi-3) are copied to tests/fixtures/gguf_cli/ with their test vectors

Model (`model` step): SmolLM2-135M-Instruct Q4_1 in transformers (float32, eager attention):
  greedy generation of 64 tokens from a prompt, and perplexity of GPL-3 followed by Apache-2.0
  (Debian /usr/share/common-licenses; the text is written to tests/fixtures/gguf_cli/) at contexts
  2048 and 8192 with ropex's protocol (eval/perplexity.hpp): the ids as the file's tokenizer gives
  them (no BOS: tokenizer.ggml.add_bos_token is false), non-overlapping windows [kN, (k+1)N) as plain
  slices, every target inside a window scored (N-1 per full window), perplexity = exp(mean NLL).

  pip install torch transformers gguf accelerate tokenizers numpy
  python3 scripts/make_gguf_cli_reference.py [tokens [NAME...]|model|all]
"""
import hashlib
import json
import os
import shutil
import sys
import warnings

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
FIX = os.path.join(ROOT, "tests", "fixtures", "gguf_cli")
MODEL = os.path.join(ROOT, ".models", "SmolLM2-135M-Instruct.Q4_1.gguf")
SRC = os.path.join(ROOT, ".models", "src")
SDIST = os.path.join(SRC, "llama_cpp_python-0.3.36.tar.gz")
PROMPT = "The GNU General Public License is"

# llama.cpp src/llama-vocab.cpp (llm_tokenizer_bpe): the split regexes of each pre-tokenizer type,
# in the original tokenizer.json spelling where llama.cpp adapted it ((?i:'s|...) for '[sS]|...).
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE = {  # pre -> (regexes, ignore_merges)
    "llama-bpe": ([LLAMA3], True),
    "qwen2": ([QWEN2], False),
    "smollm": ([r"\p{N}", GPT2], False),
    "gpt-2": ([GPT2], False),
}

FILES = {  # name -> path
    "smollm2": MODEL,
    "llama-bpe": os.path.join(SRC, "gguf", "ggml-vocab-llama-bpe.gguf"),
    "qwen2": os.path.join(SRC, "gguf", "ggml-vocab-qwen2.gguf"),
    "gpt-2": os.path.join(SRC, "gguf", "ggml-vocab-gpt-2.gguf"),
    "llama-spm": os.path.join(SRC, "gguf", "ggml-vocab-llama-spm.gguf"),
    "phi-3": os.path.join(SRC, "gguf", "ggml-vocab-phi-3.gguf"),
}
SMALL = ("llama-spm", "phi-3")  # committed to tests/fixtures/gguf_cli/


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unpack_sdist_vocab():
    import tarfile
    if not os.path.exists(SDIST):
        return
    os.makedirs(os.path.join(SRC, "gguf"), exist_ok=True)
    with tarfile.open(SDIST) as tar:
        for m in tar.getmembers():
            base = os.path.basename(m.name)
            if "/vendor/llama.cpp/models/ggml-vocab-" in m.name and any(base.startswith(f"ggml-vocab-{n}.gguf") for n in FILES):
                dst = os.path.join(SRC, "gguf", base)
                if not os.path.exists(dst):
                    with tar.extractfile(m) as src, open(dst, "wb") as out:
                        shutil.copyfileobj(src, out)


def gpl_text():
    return open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read()


def ppl_text():
    return gpl_text() + "\n" + open("/usr/share/common-licenses/Apache-2.0", encoding="utf-8").read()


def hf_tokenizer(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def reference_tokenizer(path, meta):
    """The HF tokenizer of `path` with llama.cpp's pre-tokenization for its `pre` type."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    tok = hf_tokenizer(path)
    bt = tok.backend_tokenizer
    if meta["model"] == "gpt2":
        regexes, ignore = PRE[meta["pre"]]
        bt.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        state = json.loads(bt.to_str())
        state["model"]["ignore_merges"] = ignore
        # GPT2Tokenizer adds its default "<|endoftext|>" when the vocabulary lacks it (Llama-3): an id
        # past the file's tokens, which no model has. The file's tokenizer has no such token.
        n = len(state["model"]["vocab"])
        state["added_tokens"] = [a for a in state["added_tokens"] if a["id"] < n]
        from tokenizers import Tokenizer
        tok._tokenizer = Tokenizer.from_str(json.dumps(state))
    else:  # sentencepiece: "▁" always put first, every space a "▁" (llama.cpp llm_tokenizer_spm, add_space_prefix)
        bt.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        bt.pre_tokenizer = None
    return tok


def gguf_meta(path):
    import gguf
    r = gguf.GGUFReader(path)
    def s(k):
        f = r.fields.get(k)
        return bytes(f.parts[f.data[0]]).decode() if f else None
    def b(k):
        f = r.fields.get(k)
        return bool(f.parts[f.data[0]][0]) if f else None
    return {"model": s("tokenizer.ggml.model"), "pre": s("tokenizer.ggml.pre"), "add_bos_token": b("tokenizer.ggml.add_bos_token")}


def llama_cpp_vectors(path):
    if not os.path.exists(path + ".inp"):
        return None
    inp = open(path + ".inp", encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
    out = open(path + ".out", encoding="utf-8").read().split("\n")
    return [(t, [int(x) for x in o.split()]) for t, o in zip(inp, out)]


def tokens_step(only=()):
    from make_tokenizer_fixtures import TEXTS
    os.makedirs(FIX, exist_ok=True)
    unpack_sdist_vocab()
    texts = dict(TEXTS)
    texts["gpl3"] = gpl_text()
    for name, path in FILES.items():
        if only and name not in only:
            continue
        if not os.path.exists(path):
            print(f"{name}: {path} missing, skipped")
            continue
        meta = gguf_meta(path)
        hf, ref = hf_tokenizer(path), reference_tokenizer(path, meta)
        out = {"file": os.path.relpath(path, ROOT), "sha256": sha256(path), "tokenizer.ggml.model": meta["model"],
               "tokenizer.ggml.pre": meta["pre"], "texts": {}}
        vec = llama_cpp_vectors(path)
        if vec:
            ok = sum(ref.encode(t, add_special_tokens=False) == ids for t, ids in vec)
            out["llama_cpp_vectors"] = f"{ok}/{len(vec)}"
            out["llama_cpp_vectors_hf_gguf"] = f"{sum(hf.encode(t, add_special_tokens=False) == ids for t, ids in vec)}/{len(vec)}"
            assert ok == len(vec), f"{name}: reference tokenizer gives llama.cpp's ids for {ok}/{len(vec)} test strings"
        for tname, text in texts.items():
            ids = ref.encode(text, add_special_tokens=False)
            raw = hf.encode(text, add_special_tokens=False)
            out["texts"][tname] = {"text": text if tname != "gpl3" else "/usr/share/common-licenses/GPL-3", "ids": ids,
                                   "hf_gguf": raw, "same_as_hf_gguf": ids == raw,
                                   "decoded": ref.decode(ids)}
        out["bos_with_special"] = ref.encode("a", add_special_tokens=True)[:-len(ref.encode("a", add_special_tokens=False))]
        with open(os.path.join(FIX, f"{name}.tokens.json"), "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False, indent=None)
        if name in SMALL:
            for ext in ("", ".inp", ".out"):
                if os.path.exists(path + ext):
                    shutil.copyfile(path + ext, os.path.join(FIX, os.path.basename(path) + ext))
        same = {t: v["same_as_hf_gguf"] for t, v in out["texts"].items()}
        print(f"{name}: pre={meta['pre']} vectors={out.get('llama_cpp_vectors')} (hf gguf {out.get('llama_cpp_vectors_hf_gguf')}) same_as_hf_gguf={same}")


def model_step():
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    torch.set_grad_enabled(False)
    meta = gguf_meta(MODEL)
    tok = reference_tokenizer(MODEL, meta)
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(MODEL), gguf_file=os.path.basename(MODEL),
                                                 torch_dtype=torch.float32, attn_implementation="eager").eval()
    text = ppl_text()
    with open(os.path.join(FIX, "gpl3_apache2.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    res = {"model": os.path.relpath(MODEL, ROOT), "sha256": sha256(MODEL), "transformers": transformers.__version__,
           "torch": torch.__version__, "dtype": "float32", "attn_implementation": "eager"}
    # greedy generation
    prompt_ids = tok.encode(PROMPT, add_special_tokens=False)
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=64, do_sample=False, num_beams=1)
    gen = out[0, len(prompt_ids):].tolist()
    res["generate"] = {"prompt": PROMPT, "prompt_ids": prompt_ids, "steps": 64, "tokens": gen, "text": tok.decode(gen),
                       "eos_token_id": model.generation_config.eos_token_id}
    print("generate:", gen, repr(tok.decode(gen)))
    # perplexity, ropex's protocol
    ids = tok.encode(text, add_special_tokens=False)
    res["perplexity"] = {"text": "tests/fixtures/gguf_cli/gpl3_apache2.txt (GPL-3, newline, Apache-2.0)", "tokens": len(ids),
                         "ids_sha256": hashlib.sha256(np.asarray(ids, dtype=np.int32).tobytes()).hexdigest()}
    for N in (2048, 8192):
        total, count, windows = 0.0, 0, 0
        for begin in range(0, len(ids), N):
            w = ids[begin:begin + N]
            windows += 1
            if len(w) < 2:
                continue
            logits = model(torch.tensor([w])).logits[0].double()
            nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(w[1:]), reduction="sum").item()
            total += nll
            count += len(w) - 1
        ppl = float(np.exp(total / count))
        res["perplexity"][str(N)] = {"perplexity": ppl, "mean_nll": total / count, "scored": count, "windows": windows}
        print(f"perplexity context {N}: {ppl:.6f} over {count} targets, {windows} windows")
    with open(os.path.join(FIX, "smollm2_model.json"), "w", encoding="utf-8") as f:
        json.dump(res, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    from transformers.utils import logging
    logging.set_verbosity_error()
    step = sys.argv[1] if len(sys.argv) > 1 else "all"
    if step in ("tokens", "all"):
        tokens_step(sys.argv[2:])
    if step in ("model", "all"):
        if not os.path.exists(MODEL):
            sys.exit(f"{MODEL} missing: run scripts/fetch_models.sh")
        model_step()
