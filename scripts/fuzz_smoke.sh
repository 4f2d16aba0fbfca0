#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined) and runs each for
# FUZZ_SECONDS (default 30) on a small seed corpus. Exits non-zero on the first crash; the
# reproducer is left in $BUILD/crashes/<target>/. Inputs may reach 1 MiB (-max_len), and the seeds
# include JSON nested far past the parser's depth limit, so stack-depth bugs are within reach.
#   FUZZ_SECONDS=300 scripts/fuzz_smoke.sh          # longer local run
#   FUZZ_TARGETS="safetensors config" scripts/fuzz_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build-fuzz}
SECONDS_PER=${FUZZ_SECONDS:-30}
TARGETS=${FUZZ_TARGETS:-"safetensors config llama2c tokens gguf tokenizer"}
CXX=${FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || true)}
[ -n "$CXX" ] || { echo "fuzz_smoke: clang++ not found" >&2; exit 1; }

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$CXX" -DROPEX_FUZZ=ON \
      -DROPEX_BUILD_EXAMPLES=OFF -DROPEX_BUILD_BENCH=OFF -DROPEX_INSTALL=OFF -DROPEX_OPENMP=OFF >/dev/null
cmake --build "$BUILD" -j"${JOBS:-2}" --target ropex_fuzz_all

# ---- seed corpora (small valid and near-valid inputs; written fresh each run) ------------------
SEEDS=$BUILD/seeds
rm -rf "$SEEDS"
mkdir -p "$SEEDS"/{safetensors,config,llama2c,tokens,gguf,tokenizer}
if ! command -v python3 >/dev/null; then
  echo "fuzz_smoke: python3 not found, starting from the checked-in fixtures only" >&2
else
python3 - "$SEEDS" <<'PY'
import json, os, struct, sys
out = sys.argv[1]
def st(name, header, data):
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    open(os.path.join(out, "safetensors", name), "wb").write(struct.pack("<Q", len(h)) + h + data)
st("f32", {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, struct.pack("<4f", 1, 2, 3, 4))
st("mixed", {"__metadata__": {"format": "pt"},
             "h": {"dtype": "F16", "shape": [3], "data_offsets": [0, 6]},
             "b": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [6, 10]},
             "z": {"dtype": "F32", "shape": [0], "data_offsets": [10, 10]}}, bytes(range(10)))
st("i8", {"q": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]}}, b"\1\2\3\4")
base = {"model_type": "llama", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": [2, 3], "head_dim": 4, "hidden_act": "silu"}
variants = {
    "plain": {},
    "linear": {"rope_scaling": {"type": "linear", "factor": 2.0}},
    "dynamic": {"rope_scaling": {"rope_type": "dynamic", "factor": 4.0}},
    "yarn": {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 8.0,
                                 "original_max_position_embeddings": 16, "beta_fast": 32, "beta_slow": 1}},
    "llama3": {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}},
    "longrope": {"partial_rotary_factor": 1.0, "original_max_position_embeddings": 16,
                 "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.1], "long_factor": [2.0, 3.0]}},
    "partial": {"partial_rotary_factor": 0.5, "head_dim": 8},
}
for k, v in variants.items():
    open(os.path.join(out, "config", k + ".json"), "w").write(json.dumps({**base, **v}))
# ~400 KB of nesting where the loader copies and walks values (bos/eos ids, rope dicts)
deep = "[" * 200000 + "]" * 200000
for key in ("eos_token_id", "bos_token_id", "rope_scaling", "max_position_embeddings"):
    open(os.path.join(out, "config", "deep_" + key + ".json"), "w").write(
        json.dumps({**base, key: 0}).replace('"%s": 0' % key, '"%s": %s' % (key, deep)))
h = ('{"a": ' + "[" * 100000 + "]" * 100000 + "}").encode()
open(os.path.join(out, "safetensors", "deep"), "wb").write(struct.pack("<Q", len(h)) + h)
def l2(name, dim, hidden, layers, heads, kv, vocab, seq, version=0, shared=True):
    hs = dim // heads
    n = abs(vocab) * dim + layers * (2 * dim + 2 * dim * dim + 2 * kv * hs * dim + 3 * hidden * dim) + dim
    if version == 0:
        head = struct.pack("<7i", dim, hidden, layers, heads, kv, vocab if shared else -vocab, seq)
        n += seq * hs
    else:
        head = struct.pack("<Ii7iB", 0x616b3432, 1, dim, hidden, layers, heads, kv, vocab, seq, int(shared))
        head += b"\0" * (256 - len(head))
    if not shared:
        n += abs(vocab) * dim
    open(os.path.join(out, "llama2c", name), "wb").write(head + struct.pack(f"<{n}f", *[0.25] * n))
l2("v0_shared", 4, 6, 1, 2, 1, 5, 2)
l2("v0_separate", 4, 6, 1, 2, 2, 5, 2, shared=False)
l2("v1_separate", 4, 6, 1, 2, 1, 5, 2, version=1, shared=False)
def npy(name, descr, shape, data):
    d = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    d += " " * (-(10 + len(d) + 1) % 64) + "\n"
    open(os.path.join(out, "tokens", name), "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d.encode() + data)
npy("i4.npy", "<i4", "(3,)", struct.pack("<3i", 1, 2, 3))
npy("i8.npy", "<i8", "(2,)", struct.pack("<2q", 7, 9))
npy("f4.npy", "<f4", "(2, 1)", struct.pack("<2f", 7, 9))
open(os.path.join(out, "tokens", "text"), "w").write("1 2, 3\n4,5\n")
# tokenizer: "<text>\n<tokenizer.json>", small byte-level BPE files in each supported shape
def b2u():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}
sym = b2u()
vocab = {sym[b]: b for b in range(256)}
vocab.update({"ab": 256, "abc": 257, "\u0120a": 258, "12": 259})
merges = ["a b", "ab c", "\u0120 a", "1 2"]
added = [{"id": 260, "content": "<|s|>", "special": True, "lstrip": False, "rstrip": False, "normalized": False, "single_word": False},
         {"id": 261, "content": "<t>", "special": False, "lstrip": True, "rstrip": True, "normalized": True, "single_word": False}]
l3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
bl = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
tmpl = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|s|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"<|s|>": {"id": "<|s|>", "ids": [260], "tokens": ["<|s|>"]}}}
shapes = {
    "gpt2": (None, bl, {"type": "ByteLevel"}, False, merges),
    "llama3": (None, {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": l3}, "behavior": "Isolated", "invert": False},
                                                           {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
               {"type": "Sequence", "processors": [{"type": "ByteLevel"}, tmpl]}, True, [m.split(" ") for m in merges]),
    "smollm": ({"type": "NFC"}, {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, bl]},
               {"type": "RobertaProcessing", "cls": ["<|s|>", 260], "sep": ["<|s|>", 260]}, False, merges),
}
for name, (norm, pre, post, ign, mg) in shapes.items():
    tj = {"version": "1.0", "added_tokens": added, "normalizer": norm, "pre_tokenizer": pre, "post_processor": post,
          "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": vocab, "merges": mg, "ignore_merges": ign}}
    text = "abc  abcab 123 caf\u00e9 e\u0301 <|s|>x <t> \u4f60\u597d \U0001f642\t\r"
    open(os.path.join(out, "tokenizer", name), "w", encoding="utf-8").write(text + "\n" + json.dumps(tj, ensure_ascii=False))
open(os.path.join(out, "tokenizer", "deep"), "w").write(
    "ab\n" + json.dumps({"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": 0}).replace(
        '"pre_tokenizer": 0', '"pre_tokenizer": ' + "[" * 200000 + "]" * 200000))
PY
fi
# Checked-in fixtures as extra seeds, where small.
cp tests/fixtures/safetensors/*.safetensors "$SEEDS/safetensors/" 2>/dev/null || true
cp tests/fixtures/gguf/*.gguf "$SEEDS/gguf/" 2>/dev/null || true  # gguf-py output, one tensor per type
# every real and family config.json (mutated real configs reach the per-model_type key guard)
find tests/fixtures -name '*config.json' -size -8k 2>/dev/null | sort | while read -r f; do
  cp "$f" "$SEEDS/config/$(echo "$f" | tr '/' '_')"; done

status=0
for t in $TARGETS; do
  bin=$BUILD/tests/fuzz/fuzz_$t
  corpus=$BUILD/corpus/$t
  crashes=$BUILD/crashes/$t
  mkdir -p "$corpus" "$crashes"
  echo "== fuzz_$t: ${SECONDS_PER}s =="
  if ! "$bin" "$corpus" "$SEEDS/$t" -max_total_time="$SECONDS_PER" -max_len=1048576 -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="$crashes/" -print_final_stats=1 2>"$BUILD/fuzz_$t.log"; then
    echo "fuzz_$t FAILED: reproducer in $crashes/, log $BUILD/fuzz_$t.log" >&2
    tail -40 "$BUILD/fuzz_$t.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$BUILD/fuzz_$t.log" | tr '\n' ' '; echo
  fi
done
exit $status
