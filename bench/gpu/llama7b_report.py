#!/usr/bin/env python3
"""Merges llama7b's figures (ropex) with the HF transformers peer (llama7b_hf.py) into the results
cases (llama7b_prefill, llama7b_decode, perplexity_128k, perplexity_1m), prints the Markdown table
for docs/benchmarks.md, and optionally merges the cases into bench/results/<card>.json.

    python3 bench/gpu/llama7b_report.py llama7b.json hf.json --out llama7b_cases.json [--into RESULTS.json]
        [--parity NMSE TOP1]
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ropex")
    ap.add_argument("hf")
    ap.add_argument("--out", required=True)
    ap.add_argument("--into", help="a bench/results/<card>.json to add (or replace) these cases in")
    ap.add_argument("--parity", help="JSON file from the logits parity check (nmse, top1)")
    args = ap.parse_args()
    ours = json.load(open(args.ropex))
    try:
        hf = json.load(open(args.hf))
    except (OSError, ValueError):
        hf = {}
    cases = []
    for c in ours["cases"]:
        peers = {}
        if c["op"] == "llama7b_prefill":
            v = hf.get("prefill_tok_s", {}).get(str(c["shape"]["tokens"]))
            if v:
                peers["hf_transformers"] = v
        elif c["op"] == "llama7b_decode":
            v = hf.get("decode_ms", {}).get(str(c["shape"]["context"]))
            if v:
                peers["hf_transformers"] = v
            peers["floor"] = c["floor"]
        else:
            peers["flop_floor_s"] = c["floor_s"]
        case = {"op": c["op"], "unit": c["unit"], "shape": c["shape"], "ropex": c["ropex"], "peers": peers}
        for extra in ("ropex_no_pdl", "ropex_no_graph", "ropex_by_graph_layers", "ropex_by_max_splits"):
            if extra in c:
                case[extra] = c[extra]
        if c["op"].startswith("perplexity"):
            case["peak_gb"] = c["peak_gb"]
            case["seconds_per_layer"] = c["seconds_per_layer"]
            case["estimate_32_layers_s"] = c["estimate_32_layers_s"]
            case["floor_32_layers_s"] = c["floor_32_layers_s"]
        cases.append(case)
    with open(args.out, "w") as f:
        json.dump({"card": ours["card"], "cases": cases}, f, indent=1)

    ce = ours["ceilings"]
    md = [f"Card: **{ours['card']}**; copy bandwidth {ce['copy_bandwidth_gbs']:.0f} GB/s (read+write), bf16 matmul "
          f"{ce['matmul_bf16_tflops']:.0f} TFLOP/s (cuBLAS 8192^3); HF transformers {hf.get('transformers', '?')}, "
          f"torch {hf.get('torch', '?')} (sdpa, bf16). LLaMA-2-7B shape, random bf16 weights (the same for both).", "",
          "| case | ropex | HF transformers | ratio | floor |", "|---|---|---|---|---|"]
    def fmt(x, spec, unit=""):
        return "n/a" if x is None else format(x, spec) + unit

    for c in cases:
        p = c["peers"]
        if c["op"] == "llama7b_prefill":
            h = p.get("hf_transformers")
            ratio = "" if h is None else fmt(c["ropex"] / h, ".2f", "x")
            md.append("| prefill %d tok | %s | %s | %s | |" % (c["shape"]["tokens"], fmt(c["ropex"], ".0f", " tok/s"),
                                                              fmt(h, ".0f", " tok/s"), ratio))
        elif c["op"] == "llama7b_decode":
            h = p.get("hf_transformers")
            ratio = "" if h is None else fmt(h / c["ropex"], ".1f", "x faster")
            alts = [(k, c.get(k)) for k in ("ropex_no_pdl", "ropex_no_graph")]
            names = {"ropex_no_pdl": "without PDL", "ropex_no_graph": "op by op"}
            alt = "; ".join("%s %.2f" % (names[k], v) for k, v in alts if v is not None)
            alt = "" if not alt else " (" + alt + " ms)"
            md.append("| decode at %d | %s%s | %s | %s | %.2f ms (%.2fx floor) |" % (
                c["shape"]["context"], fmt(c["ropex"], ".2f", " ms/tok"), alt, fmt(h, ".2f", " ms/tok"), ratio, p["floor"],
                c["ropex"] / p["floor"]))
        else:
            md.append("| perplexity %d tok, %d layers | %.1f s, peak %.1f GB (%.2f s/layer; 32 layers ~%.0f s) | | | "
                      "FLOP floor %.1f s (%.2fx); 32 layers %.0f s |" % (
                          c["shape"]["tokens"], c["shape"]["layers"], c["ropex"], c["peak_gb"], c["seconds_per_layer"],
                          c["estimate_32_layers_s"], p["flop_floor_s"], c["ropex"] / p["flop_floor_s"],
                          c["floor_32_layers_s"]))
    if args.parity:
        par = json.load(open(args.parity))
        md += ["", "Logits parity on these weights (256 tokens, `ropex logits --device cuda`):", "",
               "| pair | NMSE | max abs | top-1 agreement |", "|---|---|---|---|"]
        for k, v in par.items():
            if isinstance(v, dict):
                md.append(f"| {k.replace('_', ' ')} | {v['nmse']:.2e} | {v['max_abs']:.2e} | {100 * v['top1']:.1f}% |")
        if "pass" in par:
            md += ["", "Parity verdict (ropex f32 within 1e-3 of HF fp32; ropex bf16 no further from HF fp32 than HF "
                       f"bf16 is): **{'pass' if par['pass'] else 'FAIL'}**."]
    print("\n".join(md))

    if args.into:
        try:
            res = json.load(open(args.into))
        except (OSError, ValueError):
            res = {"card": ours["card"], "cases": []}
        ops = {(c["op"], json.dumps(c["shape"], sort_keys=True)) for c in cases}
        res["cases"] = [c for c in res.get("cases", []) if (c["op"], json.dumps(c["shape"], sort_keys=True)) not in ops] + cases
        with open(args.into, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
