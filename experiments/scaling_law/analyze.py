#!/usr/bin/env python3
"""Stage 4 (this machine): predicted vs measured extrapolation limits, results.csv, figures, and the
tables pasted into docs/validation.md (printed as Markdown).

Primary measurements: `ropex perplexity` (results/ropex/<name>.csv, per-position mean NLL).
Cross-check: the PyTorch curves computed on the GPU from the same exported weights (results/gpu_eval.json).
The measured-limit definition is the pre-registered one (docs/validation.md, section 1).
Usage: analyze.py ROPEX_BINARY"""
import csv, json, math, os, subprocess, sys
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
IMG = os.path.join(REPO, "docs", "img")
T_TRAIN, HEAD_DIM, BIN, MARGIN = 512, 64, 256, 0.5
ROPEX = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "build", "bin", "ropex")

MODELS = [(512, 50.0), (512, 200.0), (512, 500.0), (512, 2000.0), (512, 10000.0), (512, 40000.0),
          (512, 160000.0), (512, 1e6), (1024, 500.0), (1024, 10000.0), (1024, 160000.0)]
BASELINES = [("pretrained_b10000", "untuned (base 10000)"), ("baseline_dynamic_ntk", "dynamic NTK x32"),
             ("baseline_linear_pi", "linear PI x32"), ("baseline_yarn", "YaRN x32")]


def name_of(tl, base):
    return f"tune{tl}_b{base:g}"


def predict(tl, base):
    r = subprocess.run([ROPEX, "predict", "--head-dim", str(HEAD_DIM), "--train-len", str(T_TRAIN),
                        "--tune-len", str(tl), "--base", repr(base), "--json"],
                       check=True, capture_output=True, text=True)
    return json.loads(r.stdout)


def read_csv_curve(path):
    """ropex perplexity --out (or --csv): position, count, mean_nll (per position, unbinned)."""
    with open(path) as f:
        rows = list(csv.reader(f))
    head = [h.strip() for h in rows[0]]
    ip, il = head.index("position"), head.index("mean_nll")
    pos = np.array([int(r[ip]) for r in rows[1:]])
    loss = np.array([float(r[il]) for r in rows[1:]])
    return loss[np.argsort(pos)]


def window_dirs():
    d = os.path.join(HERE, "results")
    return sorted(os.path.join(d, x) for x in os.listdir(d) if x.startswith("ropex_win"))


def ropex_curve(name, dirs):
    """Per-position mean NLL from ropex, averaged over the windows in dirs (each dir = one window)."""
    curves = []
    for d in dirs:
        path = os.path.join(d, f"{name}.csv")
        if not os.path.exists(path):
            return None, None
        curves.append(read_csv_curve(path))
    return np.mean(curves, axis=0), dict(windows=len(curves))


def bins_of(per_pos):
    n = (len(per_pos) + BIN - 1) // BIN
    return np.array([per_pos[i * BIN:(i + 1) * BIN].mean() for i in range(n)])


def measured_limit(bins, margin=MARGIN):
    """First bin start p >= T_train whose mean loss > L_ref + margin; L_ref = mean over [256, 512).
    Returns (limit, censored)."""
    ref = bins[1]  # bin [256, 512)
    for i in range(T_TRAIN // BIN, len(bins)):
        if bins[i] > ref + margin:
            return i * BIN, 0
    return len(bins) * BIN, 1


def max_rise(bins, start_pos, span_bins=4):
    """Largest increase of the binned loss within any span of span_bins bins (1024 tokens), looking
    from the last in-distribution bin [start_pos-256, start_pos) onward."""
    b = bins[start_pos // BIN - 1:]
    best = 0.0
    for i in range(len(b)):
        for j in range(i + 1, min(len(b), i + span_bins + 1)):
            best = max(best, b[j] - b[i])
    return best


def main():
    gpu = json.load(open(os.path.join(HERE, "results", "gpu_eval.json")))
    # windows every tuned model and baseline has (a partial window pass is ignored)
    dirs = window_dirs()
    names = [name_of(tl, b) for tl, b in MODELS] + [n for n, _ in BASELINES]
    dirs = [d for d in dirs if all(os.path.exists(os.path.join(d, n + ".csv")) for n in names)] or dirs[:1]
    W = len(dirs)
    print(f"ropex windows used: {[os.path.basename(d) for d in dirs]}")
    rows, curves = [], {}
    for tl, base in MODELS:
        name = name_of(tl, base)
        p = predict(tl, base)
        per_pos, meta = ropex_curve(name, dirs)
        gb = np.array(gpu[name]["ctx16384"]["bins"])
        g_lim, g_cens = measured_limit(gb)
        row = dict(base=base, tune_len=tl, train_len=T_TRAIN, head_dim=HEAD_DIM, regime=p["regime"],
                   hard_bound=int(p["hard_bound"]), predicted_limit=round(p["extrapolation_limit"], 1),
                   measured_limit="", censored="", ratio="", measured_limit_m025="", measured_limit_m100="",
                   l_ref="", mean_loss_beyond_tune="", max_rise_1024="", ropex_windows="",
                   measured_limit_torch19=g_lim, censored_torch19=g_cens,
                   max_rise_1024_torch19=round(max_rise(gb, tl), 3),
                   mean_loss_beyond_tune_torch19=round(float(gb[tl // BIN:].mean()), 3))
        if per_pos is not None:
            b = bins_of(per_pos)
            lim, cens = measured_limit(b)
            row.update(measured_limit=lim, censored=cens, l_ref=round(float(b[1]), 3),
                       measured_limit_m025=measured_limit(b, 0.25)[0], measured_limit_m100=measured_limit(b, 1.0)[0],
                       mean_loss_beyond_tune=round(float(b[tl // BIN:].mean()), 3),
                       max_rise_1024=round(max_rise(b, tl), 3), ropex_windows=meta["windows"])
            if p["hard_bound"]:
                row["ratio"] = round(lim / p["extrapolation_limit"], 3)
            curves[name] = b
        rows.append(row)
    with open(os.path.join(HERE, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    base_rows = []
    for name, label in BASELINES:
        per_pos, meta = ropex_curve(name, dirs)
        if per_pos is None:
            continue
        b = bins_of(per_pos)
        lim, cens = measured_limit(b)
        curves[name] = b
        base_rows.append((label, lim, cens, float(b[1]), float(b[2:].mean()), float(np.mean(per_pos))))

    # ---------------- Markdown for docs/validation.md
    def lim_s(v, c):
        return f"> {v}" if c else f"{v}"
    print("| T_tune | base | regime | predicted | measured (ropex) | measured/predicted | measured (PyTorch, 19 win) | max rise / 1024 tok (nats) | mean loss [T_tune,16K) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pred = f"{r['predicted_limit']:.0f}" if r["hard_bound"] else f"none ({r['predicted_limit']:.0f}+)"
        meas = lim_s(r["measured_limit"], r["censored"]) if r["measured_limit"] != "" else "n/a"
        print(f"| {r['tune_len']} | {r['base']:g} | {r['regime']} | {pred} | {meas} | {r['ratio'] or '-'} | "
              f"{lim_s(r['measured_limit_torch19'], r['censored_torch19'])} | {r['max_rise_1024'] or '-'} | "
              f"{r['mean_loss_beyond_tune'] or '-'} |")
    print()
    print("| model | measured limit | L_ref | mean loss [512,16K) | mean loss all positions |")
    print("|---|---|---|---|---|")
    for label, lim, cens, ref, beyond, mean in base_rows:
        print(f"| {label} | {lim_s(lim, cens)} | {ref:.3f} | {beyond:.3f} | {mean:.3f} |")
    # larger-base slope (test 2)
    big = [r for r in rows if r["regime"] == "larger_base" and r["tune_len"] == 512 and r["measured_limit"] != ""]
    if len(big) >= 2:
        x = np.log([r["base"] for r in big])
        for key in ("measured_limit", "measured_limit_torch19"):
            y = np.log([r[key] for r in big])
            print(f"\nslope d log(limit) / d log(base), larger-base regime, T_tune 512 ({key}): {np.polyfit(x, y, 1)[0]:.3f} (law: 0.5)")

    # ---------------- figures
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(IMG, exist_ok=True)
    x = (np.arange(64) + 0.5) * BIN
    fig, axes = plt.subplots(3, 4, figsize=(16, 10.5), sharey=True)
    for ax, r in zip(axes.flat, rows):
        name = name_of(r["tune_len"], r["base"])
        gb = np.array(gpu[name]["ctx16384"]["bins"])
        ax.plot((np.arange(len(gb)) + 0.5) * BIN, gb, color="0.6", lw=1, label="PyTorch, 19 windows")
        if name in curves:
            b = curves[name]
            ax.plot(x[:len(b)], b, color="C0", lw=1.5, label=f"ropex, {W} window(s)")
            ax.axhline(b[1] + MARGIN, color="C0", ls=":", lw=1, label="L_ref + 0.5")
            if r["measured_limit"] != "" and not r["censored"]:
                ax.axvline(r["measured_limit"], color="C0", ls="--", lw=1, label="measured limit")
        if r["hard_bound"]:
            ax.axvline(r["predicted_limit"], color="C3", lw=1.5, label="predicted limit")
        ax.axvline(r["tune_len"], color="k", lw=0.8, alpha=0.5, label="T_tune")
        ax.set_xscale("log")
        ax.set_xlim(64, 16384)
        ax.set_title(f"base {r['base']:g}, T_tune {r['tune_len']} ({r['regime']})", fontsize=9)
        ax.grid(alpha=0.3)
    ax = axes.flat[len(rows)]
    for name, label in BASELINES:
        if name in curves:
            ax.plot(x[:len(curves[name])], curves[name], lw=1.2, label=label)
    ax.axvline(T_TRAIN, color="k", lw=0.8, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlim(64, 16384)
    ax.set_title("untuned model + inference-time scaling (ropex)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, loc="upper left")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean NLL per position (nats)")
    for ax in axes[-1]:
        ax.set_xlabel("position in window")
    fig.suptitle("Held-out Emma, per-position loss (bins of 256); red: ropex predict's limit (Theorem 3)")
    fig.tight_layout()
    fig.savefig(os.path.join(IMG, "validation_loss_vs_position.png"), dpi=90)

    fig, ax = plt.subplots(figsize=(6, 5.5))
    hb = [r for r in rows if r["hard_bound"] and r["measured_limit"] != ""]
    lo, hi = 300, 20000
    ax.plot([lo, hi], [lo, hi], "k-", lw=1)
    ax.fill_between([lo, hi], [lo / 2, hi / 2], [lo * 2, hi * 2], color="0.9", label="[0.5x, 2x] (pre-registered)")
    for r in hb:
        c = "C0" if r["tune_len"] == 512 else "C1"
        ax.scatter(r["predicted_limit"], r["measured_limit"], color=c, marker="^" if r["censored"] else "o", zorder=3)
        ax.scatter(r["predicted_limit"] * 1.03, r["measured_limit_torch19"], facecolors="none", edgecolors=c,
                   marker="s", zorder=3)
        ax.annotate(f"{r['base']:g}", (r["predicted_limit"], r["measured_limit"]), fontsize=8,
                    xytext=(4, -10 if r["tune_len"] == 1024 else 4), textcoords="offset points")
    ax.scatter([], [], color="C0", label="T_tune 512")
    ax.scatter([], [], color="C1", label="T_tune 1024")
    ax.scatter([], [], facecolors="none", edgecolors="k", marker="s", label="PyTorch, 19 windows (same weights)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("predicted limit (ropex predict), tokens")
    ax.set_ylabel("measured limit (dots: ropex perplexity), tokens")
    ax.set_title("Hard-bound regimes: predicted vs measured")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(os.path.join(IMG, "validation_predicted_vs_measured.png"), dpi=100)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in rows:
        if r["tune_len"] != 512:
            continue
        name = name_of(512, r["base"])
        b = curves.get(name, np.array(gpu[name]["ctx16384"]["bins"]))
        ax.plot(x[:len(b)], b, lw=1.3, label=f"base {r['base']:g}")
    ax.axvline(512, color="k", lw=0.8, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlim(128, 16384)
    ax.set_xlabel("position in window")
    ax.set_ylabel("mean NLL (nats), bins of 256")
    ax.set_title("All bases tuned at T_tune = 512 (ropex)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(IMG, "validation_bases_512.png"), dpi=100)

    # training curves: pre-training has flattened; every tuning run recovers its loss
    tl = json.load(open(os.path.join(HERE, "results", "train_log.json")))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    st, lo_ = zip(*tl["pretrain"]["curve"])
    sm = np.convolve(lo_, np.ones(9) / 9, mode="valid")
    a1.plot(st, lo_, color="0.75", lw=0.8, label="train loss (every 50 steps)")
    a1.plot(st[4:-4], sm, color="C0", lw=1.5, label="9-point moving average")
    a1.set_ylim(1.3, 3.5)
    a1.set_xlabel("step (65,536 tokens each)")
    a1.set_ylabel("loss (nats)")
    a1.set_title(f"pre-training, T 512, base 10000: {tl['pretrain']['tokens'] / 1e6:.0f} M tokens")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    for name, r in tl["runs"].items():
        s_, l_ = zip(*r["curve"])
        a2.plot(s_, l_, lw=1, label=f"T {r['tune_len']}, base {r['base']:g}")
    a2.set_ylim(1.3, 3.5)
    a2.set_xlabel("tuning step (65,536 tokens each)")
    a2.set_title(f"continued training: {tl['tune_steps']} steps each")
    a2.legend(fontsize=6, ncol=2)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(IMG, "validation_training.png"), dpi=90)


if __name__ == "__main__":
    main()
