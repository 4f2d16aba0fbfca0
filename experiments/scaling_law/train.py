#!/usr/bin/env python3
"""Stage 2 (GPU machine, one call): pre-train a small LLaMA at T_train=512 / base 10000, tune copies
with other bases, export HF-format checkpoints, and compute a PyTorch per-position loss curve on the
held-out novel as a cross-check of ropex.

The model is written here in plain PyTorch with exactly the Hugging Face LlamaForCausalLM weight
names and config, so `ropex` and `transformers` both load the exports (checked by check_export.py).

Everything is sized by wall-clock: --budget seconds in all; throughput is measured in the first
pre-training steps and the step counts are set from it. Outputs under --out:
  models_<k>.tar.gz   exported checkpoint dirs (config.json + model.safetensors), 3 per archive
  train_log.json      settings, throughput, loss curves, step counts, which runs finished
  gpu_eval.json       per-position loss on Emma (bins of 256) per model, PyTorch fp32
"""
import argparse, io, json, math, os, tarfile, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

T0 = time.time()
ARCH = dict(vocab_size=4096, hidden_size=192, intermediate_size=512, num_hidden_layers=4,
            num_attention_heads=3, num_key_value_heads=3, head_dim=64, rms_norm_eps=1e-5)
T_TRAIN, PRE_BASE = 512, 10000.0
TUNE_RUNS = [  # (T_tune, base): most informative first, in case the budget runs out
    (512, 10000.0), (512, 1e6), (512, 160000.0), (512, 40000.0), (512, 50.0), (512, 500.0),
    (512, 2000.0), (512, 200.0), (1024, 160000.0), (1024, 500.0), (1024, 10000.0)]
TOKENS_PER_STEP = 65536


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ---------------------------------------------------------------- model (HF LlamaForCausalLM names)
def rope_cos_sin(base, seq_len, head_dim, device):
    """cos/sin [T, d] for the half-rotated layout; angles in float64 (HF: float32; equal at T<=32K)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # theta_n
    ang = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().float().to(device), ang.sin().float().to(device)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(nn.Module):
    def __init__(s, c):
        super().__init__()
        D, H, hd = c["hidden_size"], c["num_attention_heads"], c["head_dim"]
        s.H, s.hd = H, hd
        s.q_proj = nn.Linear(D, H * hd, bias=False)
        s.k_proj = nn.Linear(D, H * hd, bias=False)
        s.v_proj = nn.Linear(D, H * hd, bias=False)
        s.o_proj = nn.Linear(H * hd, D, bias=False)

    def forward(s, x, cos, sin):
        B, T, _ = x.shape
        q = s.q_proj(x).view(B, T, s.H, s.hd).transpose(1, 2)  # (B, H, T, hd)
        k = s.k_proj(x).view(B, T, s.H, s.hd).transpose(1, 2)
        v = s.v_proj(x).view(B, T, s.H, s.hd).transpose(1, 2)
        q = (q * cos + rotate_half(q) * sin).to(v.dtype)  # x*cos + rotate_half(x)*sin (HF)
        k = (k * cos + rotate_half(k) * sin).to(v.dtype)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return s.o_proj(y.transpose(1, 2).reshape(B, T, s.H * s.hd))


class MLP(nn.Module):
    def __init__(s, c):
        super().__init__()
        D, I = c["hidden_size"], c["intermediate_size"]
        s.gate_proj = nn.Linear(D, I, bias=False)
        s.up_proj = nn.Linear(D, I, bias=False)
        s.down_proj = nn.Linear(I, D, bias=False)

    def forward(s, x):
        return s.down_proj(F.silu(s.gate_proj(x)) * s.up_proj(x))


class RMSNorm(nn.Module):
    def __init__(s, D, eps):
        super().__init__()
        s.weight = nn.Parameter(torch.ones(D))
        s.eps = eps

    def forward(s, x):  # HF: normalize in float32, cast back, then scale
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + s.eps)
        return s.weight * y.to(x.dtype)


class Layer(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.self_attn, s.mlp = Attention(c), MLP(c)
        s.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        s.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(s, x, cos, sin):
        x = x + s.self_attn(s.input_layernorm(x), cos, sin)
        return x + s.mlp(s.post_attention_layernorm(x))


class Inner(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        s.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        s.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Llama(nn.Module):
    """LlamaForCausalLM with tied embeddings: state_dict keys are HF's ('model.layers.0...')."""

    def __init__(s, c):
        super().__init__()
        s.model = Inner(c)
        n = c["num_hidden_layers"]
        for name, p in s.named_parameters():
            if p.dim() == 2:  # GPT-2 style init; residual outputs scaled by 1/sqrt(2n)
                std = 0.02 / math.sqrt(2 * n) if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(s, ids, cos, sin):
        x = s.model.embed_tokens(ids)
        for layer in s.model.layers:
            x = layer(x, cos, sin)
        x = s.model.norm(x)
        return F.linear(x, s.model.embed_tokens.weight)  # tied lm_head


def loss_fn(model, ids, cos, sin):
    logits = model(ids[:, :-1], cos, sin)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


# ---------------------------------------------------------------- export
def hf_config(base, max_pos, tune_len):
    c = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
             attention_bias=False, mlp_bias=False, tie_word_embeddings=True, bos_token_id=1,
             eos_token_id=2, initializer_range=0.02, torch_dtype="bfloat16", use_cache=True,
             max_position_embeddings=max_pos, rope_theta=base, rope_scaling=None, **ARCH)
    c["ropex_experiment"] = dict(train_len=T_TRAIN, pretrain_base=PRE_BASE, tune_len=tune_len, base=base)
    return c


def safetensors_bytes(sd):
    """Minimal safetensors writer (bf16): 8-byte header length, JSON header, raw little-endian data."""
    header, blobs, off = {}, [], 0
    for k in sorted(sd):
        t = sd[k].detach().to("cpu", torch.bfloat16).contiguous()
        b = t.view(torch.int16).numpy().tobytes()
        header[k] = dict(dtype="BF16", shape=list(t.shape), data_offsets=[off, off + len(b)])
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return len(h).to_bytes(8, "little") + h + b"".join(blobs)


def add_bytes(tar, name, data):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime = len(data), int(time.time())
    tar.addfile(ti, io.BytesIO(data))


# ---------------------------------------------------------------- training
class Stream:
    def __init__(s, path, device):
        s.tok = torch.from_numpy(np.fromfile(path, np.uint16).astype(np.int64)).to(device)

    def batch(s, B, T, gen):
        i = torch.randint(0, s.tok.numel() - T - 1, (B,), device=s.tok.device, generator=gen)
        return s.tok[i[:, None] + torch.arange(T + 1, device=s.tok.device)]


def make_opt(model, lr):
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed_tokens" not in n)]
    return torch.optim.AdamW([dict(params=decay, weight_decay=0.1), dict(params=rest, weight_decay=0.0)],
                             lr=lr, betas=(0.9, 0.95), fused=decay[0].is_cuda)


def lr_at(step, total, warm, peak, floor):
    if step < warm:
        return peak * (step + 1) / warm
    p = min(1.0, (step - warm) / max(1, total - warm))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * p))


@torch.no_grad()
def val_loss(fwd, val, T, base, gen_seed=1234, n=16):
    cos, sin = rope_cos_sin(base, T, ARCH["head_dim"], val.tok.device)
    g = torch.Generator(device=val.tok.device).manual_seed(gen_seed)
    with torch.autocast(val.tok.device.type, torch.bfloat16):
        return float(loss_fn(fwd, val.batch(n * 4, T, g), cos, sin))


def train_phase(model, fwd, data, *, T, base, steps, peak, floor, warm, seed, deadline, tag, on_step=None):
    dev = data.tok.device
    B = TOKENS_PER_STEP // T
    cos, sin = rope_cos_sin(base, T, ARCH["head_dim"], dev)
    opt = make_opt(model, peak)
    g = torch.Generator(device=dev).manual_seed(seed)
    curve, step = [], 0
    while step < steps:
        if time.time() > deadline:
            log(f"{tag}: deadline reached at step {step}/{steps}")
            break
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, steps, warm, peak, floor)
        ids = data.batch(B, T, g)
        with torch.autocast(dev.type, torch.bfloat16):
            loss = loss_fn(fwd, ids, cos, sin)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps - 1:
            curve.append((step, float(loss)))
            if step % 200 == 0:
                log(f"{tag} step {step}/{steps} loss {curve[-1][1]:.4f} lr {opt.param_groups[0]['lr']:.2e}")
        step += 1
        if on_step is not None:
            steps = on_step(step, steps)
    return curve, step


# ---------------------------------------------------------------- evaluation cross-check (PyTorch)
@torch.no_grad()
def eval_curve(model, emma, base, ctx, bin_size=256, max_windows=64):
    """Mean next-token NLL per position over non-overlapping windows of ctx tokens (fp32)."""
    dev = emma.device
    n_win = min(max_windows, (emma.numel() - 1) // ctx)
    cos, sin = rope_cos_sin(base, ctx, ARCH["head_dim"], dev)
    tot = torch.zeros(ctx - 1, dtype=torch.float64, device=dev)
    for w in range(n_win):
        ids = emma[w * ctx:(w + 1) * ctx][None]
        logits = model(ids[:, :-1], cos[:-1], sin[:-1]).float()
        nll = F.cross_entropy(logits[0], ids[0, 1:], reduction="none")
        tot += nll.double()
    per_pos = (tot / n_win).cpu().numpy()  # position p predicts token p+1
    nb = (ctx - 1 + bin_size - 1) // bin_size
    bins = [float(per_pos[i * bin_size:(i + 1) * bin_size].mean()) for i in range(nb)]
    return dict(context=ctx, windows=n_win, bin_size=bin_size, bins=bins, mean=float(per_pos.mean()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for the whole script")
    ap.add_argument("--pretrain-frac", type=float, default=0.40)
    ap.add_argument("--compile", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="tiny run (20+30 steps) to check the code path")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    global TOKENS_PER_STEP
    if a.smoke:
        TOKENS_PER_STEP = 2048
    os.makedirs(a.out, exist_ok=True)
    dev = a.device
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    log("torch", torch.__version__, (torch.cuda.get_device_name(0) if dev == "cuda" else dev))
    train, val = Stream(os.path.join(a.data, "train.u16"), dev), Stream(os.path.join(a.data, "val.u16"), dev)
    emma = torch.from_numpy(np.fromfile(os.path.join(a.data, "emma.u16"), np.uint16).astype(np.int64)).to(dev)
    log(f"tokens: train {train.tok.numel()}, val {val.tok.numel()}, emma {emma.numel()}")
    deadline_all = T0 + a.budget
    reserve_end = 45.0  # export + PyTorch eval + archive
    info = dict(arch=ARCH, train_len=T_TRAIN, pretrain_base=PRE_BASE, tokens_per_step=TOKENS_PER_STEP,
                budget_s=a.budget, device=(torch.cuda.get_device_name(0) if dev == "cuda" else dev), torch=torch.__version__, runs={})

    model = Llama(ARCH).to(dev)
    info["params"] = sum(p.numel() for p in model.parameters())
    fwd = model
    if a.compile:
        try:
            fwd = torch.compile(model)
        except Exception as e:  # keep going in eager mode
            log("torch.compile failed:", e)
            fwd = model

    # ---- pre-training: measure throughput between steps 10 and 40, then fix the step count
    pre_end = T0 + a.pretrain_frac * a.budget
    meas = {}

    def on_pre(step, steps):
        if step == 10:
            sync()
            meas["t10"] = time.time()
        if step == 40:
            sync()
            dt = (time.time() - meas["t10"]) / 30
            meas["step_s"] = dt
            left = pre_end - time.time()
            new = 40 + max(100, int(left / dt))
            log(f"throughput {TOKENS_PER_STEP / dt / 1e6:.2f} M tok/s ({dt * 1e3:.1f} ms/step) -> pretrain steps {new}")
            return new
        return steps

    t = time.time()
    try:
        curve, done = train_phase(model, fwd, train, T=T_TRAIN, base=PRE_BASE, steps=20 if a.smoke else 10**6,
                                  peak=3e-3, floor=3e-4, warm=100, seed=1, deadline=pre_end + 5, tag="pre",
                                  on_step=on_pre)
    except Exception as e:
        if fwd is model:
            raise
        log("compiled training failed, eager fallback:", repr(e)[:300])
        fwd = model
        model.load_state_dict(Llama(ARCH).to(dev).state_dict())
        curve, done = train_phase(model, fwd, train, T=T_TRAIN, base=PRE_BASE, steps=10**6, peak=3e-3,
                                  floor=3e-4, warm=100, seed=1, deadline=pre_end + 5, tag="pre", on_step=on_pre)
    sync()
    pre_s = time.time() - t
    info["pretrain"] = dict(steps=done, seconds=pre_s, curve=curve, step_s=meas.get("step_s"),
                            tokens=done * TOKENS_PER_STEP, val_loss=val_loss(model, val, T_TRAIN, PRE_BASE))
    log(f"pretrain done: {done} steps, {pre_s:.0f}s, val loss {info['pretrain']['val_loss']:.4f}")
    pre_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    exports = [("pretrained_b10000", pre_state, PRE_BASE, T_TRAIN, None)]

    # ---- tuning runs: equal steps; the 1024 runs recompile once (longer windows, cost ~ +15%)
    left = deadline_all - reserve_end - time.time()
    step_s = meas.get("step_s") or 0.05
    n512 = sum(1 for tl, _ in TUNE_RUNS if tl == 512)
    n1024 = len(TUNE_RUNS) - n512
    per_step_cost = step_s * (n512 + 1.15 * n1024)
    tune_steps = 30 if a.smoke else max(60, int((left - 40.0) / per_step_cost))
    info["tune_steps"] = tune_steps
    log(f"tuning: {len(TUNE_RUNS)} runs x {tune_steps} steps ({left:.0f}s left for tuning)")
    for tl, base in TUNE_RUNS:
        if time.time() > deadline_all - reserve_end - 5:
            log(f"skip tune T={tl} base={base:g}: out of time")
            continue
        model.load_state_dict(pre_state)
        t = time.time()
        c, done = train_phase(model, fwd, train, T=tl, base=base, steps=tune_steps, peak=1e-3, floor=1e-4,
                              warm=20, seed=2, deadline=deadline_all - reserve_end, tag=f"tune{tl}_b{base:g}")
        sync()
        name = f"tune{tl}_b{base:g}"
        vl = val_loss(model, val, tl, base)
        info["runs"][name] = dict(tune_len=tl, base=base, steps=done, complete=done == tune_steps,
                                  seconds=time.time() - t, curve=c, val_loss=vl)
        log(f"{name}: {done} steps in {time.time() - t:.1f}s, val loss {vl:.4f}")
        exports.append((name, {k: v.detach().clone() for k, v in model.state_dict().items()}, base, tl, done))

    # ---- export (bf16) + PyTorch eval of the exported (bf16-rounded) weights in fp32
    ev = {}
    tars, per_tar = [], 3
    for i in range(0, len(exports), per_tar):
        path = os.path.join(a.out, f"models_{i // per_tar}.tar.gz")
        with tarfile.open(path, "w:gz", compresslevel=4) as tar:
            for name, sd, base, tl, _ in exports[i:i + per_tar]:
                sd = {k: v for k, v in sd.items()}
                max_pos = T_TRAIN if name.startswith("pretrained") else tl
                add_bytes(tar, f"{name}/config.json", json.dumps(hf_config(base, max_pos, tl), indent=1).encode())
                add_bytes(tar, f"{name}/model.safetensors", safetensors_bytes(sd))
        tars.append(path)
    log("exported", [os.path.basename(p) + f" {os.path.getsize(p) / 2**20:.1f}MiB" for p in tars])
    emodel = Llama(ARCH).to(dev).float().eval()
    for name, sd, base, tl, _ in exports:
        if time.time() > deadline_all + 20:
            log("eval: out of time, stop")
            break
        emodel.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in sd.items()})
        if a.smoke:
            ev[name] = {"base": base, "tune_len": tl, "ctx16384": eval_curve(emodel, emma, base, 2048, max_windows=1)}
        else:
            ev[name] = {"base": base, "tune_len": tl, "ctx16384": eval_curve(emodel, emma, base, 16384),
                        "ctx32768": eval_curve(emodel, emma, base, 32768)}
        log(f"eval {name}: mean loss @16K {ev[name]['ctx16384']['mean']:.4f}")
    with open(os.path.join(a.out, "gpu_eval.json"), "w") as f:
        json.dump(ev, f)
    info["total_s"] = time.time() - T0
    with open(os.path.join(a.out, "train_log.json"), "w") as f:
        json.dump(info, f, indent=1)
    log("done")


if __name__ == "__main__":
    main()
