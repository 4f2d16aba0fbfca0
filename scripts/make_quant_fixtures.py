#!/usr/bin/env python3
"""Writes the GGUF and quantized-block fixtures that tests/test_quant.cpp and tests/test_gguf.cpp
compare against, using the `gguf` PyPI package (llama.cpp's gguf-py) as the reference.

  pip install gguf numpy
  python3 scripts/make_quant_fixtures.py                 # tests/fixtures/quant/, tests/fixtures/gguf/tiny.gguf
  python3 scripts/make_quant_fixtures.py --model .models/SmolLM2-135M-Instruct.Q4_1.gguf
                                                         # + tests/fixtures/gguf/smollm2_*.{npy,json}

tests/fixtures/quant/<TYPE>.bin   raw blocks: random blocks, then blocks whose f16 scale fields
                                  hold extreme values (f16 max, subnormals, +-0, -1, +-inf, NaN)
tests/fixtures/quant/<TYPE>.npy   gguf.quants.dequantize of those bytes, float32, (n_blocks, block)
tests/fixtures/gguf/tiny.gguf     GGUFWriter output: metadata of every value type (nested arrays
                                  too) and one tensor per supported type (the first blocks of
                                  each <TYPE>.bin); tiny.json lists what was written
With --model: smollm2_tensors.json (every tensor's name, type, ggml shape, as gguf.GGUFReader
reads them) and smollm2_reference.npy (a few hundred dequantized values; which ones in
smollm2_reference.json).
"""
import argparse
import importlib.metadata
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
QUANT_DIR = os.path.join(ROOT, "tests", "fixtures", "quant")
GGUF_DIR = os.path.join(ROOT, "tests", "fixtures", "gguf")

# Byte offsets of the f16 scale fields inside one block (ggml-common.h block_* structs).
SCALE_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
# f16 bit patterns: max, -max, smallest and largest subnormal, +0, -0, -1, +inf, -inf, qNaN, sNaN.
SPECIAL_F16 = [0x7BFF, 0xFBFF, 0x0001, 0x03FF, 0x0000, 0x8000, 0xBC00, 0x7C00, 0xFC00, 0x7E00, 0x7D01]
N_RANDOM = {32: 16, 256: 2}  # random blocks per block size: fixtures stay a few KB


def random_f16(rng, n):
    """Scales as a quantizer would write them: signed, magnitudes from 1e-4 to 10."""
    mag = 10.0 ** rng.uniform(-4, 1, n)
    return (mag * rng.choice([-1.0, 1.0], n)).astype(np.float16).view(np.uint16)


def make_blocks(rng, qtype):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    fields = SCALE_FIELDS[qtype]
    rand = rng.integers(0, 256, (N_RANDOM[block], size), dtype=np.uint8)
    for off in fields:
        rand[:, off:off + 2] = random_f16(rng, len(rand)).view(np.uint8).reshape(-1, 2)
    # One block per special value; with two scale fields (d and min) the second gets the special
    # value of a neighbour, so every value meets each field and inf/NaN meet finite partners.
    spec = rng.integers(0, 256, (len(SPECIAL_F16), size), dtype=np.uint8)
    for k, s in enumerate(SPECIAL_F16):
        for f, off in enumerate(fields):
            v = SPECIAL_F16[(k + 5 * f) % len(SPECIAL_F16)]
            spec[k, off:off + 2] = np.array([v], dtype=np.uint16).view(np.uint8)
    if len(fields) == 2:  # and each special value once with an ordinary partner
        extra = rng.integers(0, 256, (len(SPECIAL_F16), size), dtype=np.uint8)
        for k, s in enumerate(SPECIAL_F16):
            extra[k, fields[0]:fields[0] + 2] = random_f16(rng, 1).view(np.uint8)
            extra[k, fields[1]:fields[1] + 2] = np.array([s], dtype=np.uint16).view(np.uint8)
        spec = np.concatenate([spec, extra]) if block == 32 else spec
    return np.concatenate([rand, spec])


def write_quant_fixtures(rng):
    os.makedirs(QUANT_DIR, exist_ok=True)
    made = {}
    for qtype in SCALE_FIELDS:
        blocks = make_blocks(rng, qtype)
        with np.errstate(all="ignore"):  # inf * 0 and NaN scales are the point of the special blocks
            ref = dequantize(blocks, qtype)
        assert ref.dtype == np.float32 and ref.shape == (len(blocks), gguf.GGML_QUANT_SIZES[qtype][0])
        blocks.tofile(os.path.join(QUANT_DIR, qtype.name + ".bin"))
        np.save(os.path.join(QUANT_DIR, qtype.name + ".npy"), ref)
        made[qtype] = blocks
    # F16 / BF16: random bit patterns plus the special ones, decoded by numpy.
    bits = np.concatenate([rng.integers(0, 65536, 512, dtype=np.uint16), np.array(SPECIAL_F16, dtype=np.uint16),
                           np.array([0x7F80, 0xFF80, 0x7FC0, 0x0001, 0x8001, 0x7F7F], dtype=np.uint16)])
    for qtype in (T.F16, T.BF16):
        raw = bits.view(np.uint8).reshape(1, -1)
        ref = dequantize(raw, qtype).reshape(1, -1)
        raw.tofile(os.path.join(QUANT_DIR, qtype.name + ".bin"))
        np.save(os.path.join(QUANT_DIR, qtype.name + ".npy"), ref.astype(np.float32))
        made[qtype] = raw
    return made


def write_tiny_gguf(made):
    """A small GGUF from the official writer: every metadata value type and one tensor per type."""
    os.makedirs(GGUF_DIR, exist_ok=True)
    path = os.path.join(GGUF_DIR, "tiny.gguf")
    w = gguf.GGUFWriter(path, arch="llama")
    V = gguf.GGUFValueType
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_uint64("t.u64", 18000000000000000000)
    w.add_int64("t.i64", -9000000000000000000)
    w.add_float32("t.f32", 0.1)
    w.add_float64("t.f64", 0.1)
    w.add_bool("t.bool_true", True)
    w.add_bool("t.bool_false", False)
    w.add_string("t.string", "h\u00e9llo \u4e16\u754c")
    w.add_string("t.empty_string", "")
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_key_value("t.arr_u8", [1, 2, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("t.arr_f32", [0.5, -1.25], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("t.arr_f64", [0.1], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("t.arr_bool", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_array("t.arr_str", ["a", "", "bc"])
    w.add_array("t.arr_nested", [[1, 2], ["x", "yz"], [[3]]])
    w.add_block_count(2)          # llama.block_count, u32
    w.add_rope_freq_base(10000.0)  # llama.rope.freq_base, f32
    tensors = []
    rows = 2
    for qtype in (T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        if qtype == T.F32:
            data = np.arange(24, dtype=np.float32).reshape(3, 8) * np.float32(0.5)
            w.add_tensor("t.f32", data)
            tensors.append({"name": "t.f32", "type": "F32", "ne": [8, 3]})
            continue
        if block == 1:
            raw = made[qtype][0, :2 * 64].reshape(rows, -1)      # 2 rows of 32 values
        else:
            per_row = 2 if block == 32 else 1                      # blocks per row
            raw = made[qtype][:rows * per_row].reshape(rows, -1)   # random blocks
        name = "t." + qtype.name.lower()
        w.add_tensor(name, raw, raw_dtype=qtype)
        ne0 = raw.shape[1] // size * block
        tensors.append({"name": name, "type": qtype.name, "ne": [ne0, rows]})
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(os.path.join(GGUF_DIR, "tiny.json"), "w") as f:
        json.dump({"tensors": tensors}, f, indent=1)
        f.write("\n")


def write_model_reference(model):
    r = gguf.GGUFReader(model)
    listing = [{"name": t.name, "type": t.tensor_type.name, "ne": [int(x) for x in t.shape]} for t in r.tensors]
    with open(os.path.join(GGUF_DIR, "smollm2_tensors.json"), "w") as f:
        arrays = {k: len(fl.data) for k, fl in r.fields.items() if fl.types and fl.types[0] == gguf.GGUFValueType.ARRAY}
        f.write('{"model": %s, "array_lengths": %s, "tensors": [\n' % (json.dumps(os.path.basename(model)), json.dumps(arrays)))
        f.write(",\n".join(json.dumps(t) for t in listing))
        f.write("\n]}\n")
    by_name = {t.name: t for t in r.tensors}
    # (tensor, row, first element, count): rows of each stored type, in the middle of the model too.
    picks = [("token_embd.weight", 0, 0, 64), ("token_embd.weight", 49151, 512, 64),
             ("blk.0.attn_q.weight", 0, 0, 64), ("blk.17.ffn_down.weight", 300, 1472, 64),
             ("blk.29.attn_v.weight", 191, 0, 64), ("blk.5.attn_norm.weight", 0, 0, 64),
             ("output_norm.weight", 0, 512, 64)]
    values, spec = [], []
    for name, row, first, count in picks:
        t = by_name[name]
        rows = t.data.reshape(-1, t.data.shape[-1])  # one stored row per line (bytes or floats)
        deq = dequantize(np.ascontiguousarray(rows[row:row + 1]), t.tensor_type).reshape(-1)
        values.append(deq[first:first + count].astype(np.float32))
        spec.append({"tensor": name, "row": row, "first": first, "count": count})
    np.save(os.path.join(GGUF_DIR, "smollm2_reference.npy"), np.concatenate(values))
    with open(os.path.join(GGUF_DIR, "smollm2_reference.json"), "w") as f:
        json.dump({"model": os.path.basename(model), "gguf_version": importlib.metadata.version("gguf"),
                   "picks": spec}, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a GGUF model to take reference values from (smollm2 fixtures)")
    ap.add_argument("--seed", type=int, default=20240611)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    made = write_quant_fixtures(rng)
    write_tiny_gguf(made)
    if args.model:
        write_model_reference(args.model)
    print("fixtures written to", os.path.relpath(QUANT_DIR, ROOT), "and", os.path.relpath(GGUF_DIR, ROOT), file=sys.stderr)


if __name__ == "__main__":
    main()
