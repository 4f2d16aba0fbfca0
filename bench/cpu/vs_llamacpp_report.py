#!/usr/bin/env python3
"""bench/cpu/vs_llamacpp.sh's runs: one JSON line per run (--parse), and the medians as a table.

  vs_llamacpp_report.py --parse NAME THREADS ROUND LOG TIME_V   # -> one JSON line
  vs_llamacpp_report.py runs.jsonl                              # -> markdown table
"""
import json, re, statistics, sys


def parse_time_v(path):
    t = open(path).read()
    def field(key):
        m = re.search(re.escape(key) + r":\s*(.+)", t)
        return m.group(1).strip() if m else None
    wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    return {"wall_s": secs, "cpu_s": float(field("User time (seconds)")) + float(field("System time (seconds)")),
            "peak_rss_mb": int(field("Maximum resident set size (kbytes)")) / 1024}


def parse_run(name, threads, rnd, log_path, time_path):
    log = open(log_path, errors="replace").read()
    d = {"name": name, "threads": int(threads), "round": int(rnd), **parse_time_v(time_path)}
    if name.startswith("ropex-ppl"):
        j = json.loads(log[log.index("{"):log.rindex("}") + 1])
        d["ppl"] = j["perplexity"]
        d["tokens"] = j["tokens"] + 1  # every token goes through the forward once (stride = context)
    elif name == "llama-perplexity":
        m = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+)", log)
        d["tokens"] = int(m.group(1)) * int(m.group(2))
        m = re.search(r"Final estimate: PPL = ([0-9.]+)", log)
        d["ppl"] = float(m.group(1)) if m else None
        m = re.search(r"prompt eval time =\s*([0-9.]+) ms /\s*(\d+) tokens", log)
        if m:
            d["eval_tok_s"] = int(m.group(2)) / (float(m.group(1)) / 1000)
    elif name.startswith("ropex-generate"):
        # the decode steps' own rate (what llama-bench's tg measures), else the whole call's
        m = re.search(r"decode steps in ([0-9.]+) s \(([0-9.]+) tokens/s", log)
        if m:
            d["gen_tok_s"] = float(m.group(2))
        else:
            m = re.search(r"(\d+) tokens in ([0-9.]+) s \(([0-9.]+) tokens/s", log)
            d["gen_tok_s"] = float(m.group(3))
    elif name == "llama-bench-tg":
        j = json.loads([l for l in log.splitlines() if l.startswith("{")][-1])
        d["gen_tok_s"] = j["avg_ts"]
    if "tokens" in d:
        d["tok_s"] = d["tokens"] / d["wall_s"]
        d["tok_cpu_s"] = d["tokens"] / d["cpu_s"]
    return d


def report(path):
    runs = [json.loads(l) for l in open(path) if l.strip()]
    med = lambda v: statistics.median(v) if v else float("nan")
    def vals(name, t, key):
        return [r[key] for r in runs if r["name"] == name and r["threads"] == t and r.get(key) is not None]
    def cell(name, t, key):
        v = vals(name, t, key)
        return f"{med(v):.1f} ({'/'.join(f'{x:.1f}' for x in v)})" if v else "-"
    threads = sorted({r["threads"] for r in runs})
    print("Perplexity, context 2048 (tokens through the forward per wall second / per CPU-second; medians, runs in brackets)\n")
    print("| threads | program | ppl | tok/s | tok/CPU-s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for t in threads:
        for name in ["ropex-ppl-fast", "ropex-ppl-exact", "llama-perplexity"]:
            if vals(name, t, "tok_s"):
                ppl = med(vals(name, t, "ppl"))
                print(f"| {t} | {name} | {ppl:.4f} | {cell(name, t, 'tok_s')} | {cell(name, t, 'tok_cpu_s')} | "
                      f"{med(vals(name, t, 'peak_rss_mb')):.0f} |")
    print("\nGeneration, 128 tokens at depth ~0 (tokens/s as each program reports it)\n")
    print("| threads | program | tok/s | peak RSS MB |")
    print("|---|---|---|---|")
    for t in threads:
        for name in ["ropex-generate-fast", "ropex-generate-exact", "llama-bench-tg"]:
            if vals(name, t, "gen_tok_s"):
                print(f"| {t} | {name} | {cell(name, t, 'gen_tok_s')} | {med(vals(name, t, 'peak_rss_mb')):.0f} |")
    print("\nRatios (ropex / llama.cpp, medians)\n")
    print("| threads | ppl --fast tok/s | ppl --fast tok/CPU-s | ppl exact tok/s | generate --fast | generate 2 vs 1 thread | peak RSS, ppl --fast |")
    print("|---|---|---|---|---|---|---|")
    g1 = med(vals("ropex-generate-fast", 1, "gen_tok_s"))
    for t in threads:
        def ratio(a, b, key):
            x, y = med(vals(a, t, key)), med(vals(b, t, key))
            return f"{x / y:.2f}x" if x == x and y == y and y else "-"
        g = med(vals("ropex-generate-fast", t, "gen_tok_s"))
        print(f"| {t} | {ratio('ropex-ppl-fast', 'llama-perplexity', 'tok_s')} | "
              f"{ratio('ropex-ppl-fast', 'llama-perplexity', 'tok_cpu_s')} | "
              f"{ratio('ropex-ppl-exact', 'llama-perplexity', 'tok_s')} | "
              f"{ratio('ropex-generate-fast', 'llama-bench-tg', 'gen_tok_s')} | "
              f"{(g / g1):.2f}x | {ratio('ropex-ppl-fast', 'llama-perplexity', 'peak_rss_mb')} |")
    fa = med([r["ppl"] for r in runs if r["name"] == "ropex-ppl-fast"])
    ex = med([r["ppl"] for r in runs if r["name"] == "ropex-ppl-exact"])
    if fa == fa and ex == ex:
        print(f"\nropex fast vs exact perplexity: {100 * (fa / ex - 1):+.3f}%")


if __name__ == "__main__":
    if sys.argv[1] == "--parse":
        print(json.dumps(parse_run(*sys.argv[2:7])))
    else:
        report(sys.argv[1])
