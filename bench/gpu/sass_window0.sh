#!/usr/bin/env bash
# Window-0 prefill kernels against a base tree, without a GPU: compiles one translation unit that
# instantiates the window-0 flash kernels (bf16; head_dim 128 fa2 tilings; every sm90 RoPE mode)
# twice, against `git archive BASE include` and against this tree's include/, to sm_90a cubins,
# then compares each kernel's SASS instruction listing (addresses, encodings, symbol names and
# branch targets normalised away) and register counts.
#   usage: bench/gpu/sass_window0.sh [BASE=837bda5] [WORKDIR=build-sass-w0]   (nvcc 12.8+ / 13, no GPU)
# Causal/non-causal and GQA are run-time arguments of the same kernels, so these instantiations
# are the code every window-0 call (shape.window == 0) runs on those paths.
# Three listings per kernel are compared:
#   raw:    cuobjdump's lines as they are (addresses and encodings included)
#   strict: the instructions with their operands (constant-bank offsets included)
#   params: the same with kernel-parameter offsets c[0x0][...] replaced by "c[0x0][P]" (only
#           differs from strict if the parameter struct's layout changed)
# Exit status 0 iff every kernel is identical under "strict". Also printed: registers, stack bytes
# and kernel-parameter bytes (CONSTANT[0]) of each side.
set -uo pipefail
BASE=${1:-837bda5}
WORK=${2:-build-sass-w0}
ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
mkdir -p "$WORK/base"
rm -rf "$WORK/base/include"
git archive "$BASE" include | tar -x -C "$WORK/base"

cat > "$WORK/tu.cu" <<'EOF'
// Window-0 prefill kernels, the instantiations ops.cuh's flash_attention<bf16> makes for head_dim 128
// (the window argument, where the tree has one, is left at its default: false).
#include <ropex/backends/cuda/flash_prefill.cuh>
#include <ropex/backends/cuda/flash_prefill_sm90.cuh>
using bf16 = __nv_bfloat16;
namespace ropex::cuda::detail {
template __global__ void flash_forward_kernel<bf16, 128, 4, 2, 64>(FlashArgs<bf16>);
template __global__ void flash_forward_kernel<bf16, 128, 4, 2, 32>(FlashArgs<bf16>);
template __global__ void flash_forward_kernel<bf16, 128, 8, 1, 64>(FlashArgs<bf16>);
template __global__ void flash_forward_kernel<bf16, 128, 4, 1, 64>(FlashArgs<bf16>);
}  // namespace ropex::cuda::detail
namespace ropex::cuda::sm90 {
#define ROPEX_I(M)                                                                                             \
  template __global__ void flash_forward_sm90_kernel<bf16, Sm90Rope::M>(                                      \
      const __grid_constant__ CUtensorMap, const __grid_constant__ CUtensorMap, const __grid_constant__ CUtensorMap, \
      const __grid_constant__ CUtensorMap, const __grid_constant__ CUtensorMap, const __grid_constant__ CUtensorMap, \
      Sm90Args<bf16>);
ROPEX_I(none)
ROPEX_I(q)
ROPEX_I(k)
ROPEX_I(anchors_q)
ROPEX_I(anchors_k)
#undef ROPEX_I
}  // namespace ropex::cuda::sm90
EOF

if [ "${SASS_REUSE:-0}" != 1 ]; then  # SASS_REUSE=1: compare the cubins of the last run again
  INC=()
  for d in /usr/include/eigen3 .deps/include .deps/include/eigen3; do [ -d "$d" ] && INC+=(-I"$d"); done
  FLAGS=(-cubin -gencode arch=compute_90a,code=sm_90a -O3 -DNDEBUG -DROPEX_HAS_CUDA=1 -DROPEX_CUDA_SM90A=1
         --expt-relaxed-constexpr --extended-lambda -std=c++20 "${INC[@]}")
  echo "== compiling (base $BASE and this tree, in parallel)"
  t0=$(date +%s)
  nvcc "${FLAGS[@]}" -I"$WORK/base/include" "$WORK/tu.cu" -o "$WORK/base.cubin" > "$WORK/base.log" 2>&1 &
  p1=$!
  nvcc "${FLAGS[@]}" -Iinclude "$WORK/tu.cu" -o "$WORK/new.cubin" > "$WORK/new.log" 2>&1 &
  p2=$!
  ok=1
  wait $p1 || { echo "base compile failed"; tail -30 "$WORK/base.log"; ok=0; }
  wait $p2 || { echo "new compile failed"; tail -30 "$WORK/new.log"; ok=0; }
  [ $ok = 1 ] || exit 2
  echo "   compiled in $(( $(date +%s) - t0 )) s"
fi

# cuobjdump: PATH, the CUDA toolkit's, or the copy Triton's wheel ships (CUDA 13.x) where the toolkit lacks it.
CUOBJDUMP=$(command -v cuobjdump || true)
[ -n "$CUOBJDUMP" ] || [ ! -x /usr/local/cuda/bin/cuobjdump ] || CUOBJDUMP=/usr/local/cuda/bin/cuobjdump
if [ -z "$CUOBJDUMP" ]; then
  t=$(python3 -c 'import triton, os; print(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))' 2>/dev/null)
  [ -x "$t" ] && CUOBJDUMP=$t
fi
[ -n "$CUOBJDUMP" ] || { echo "no cuobjdump (pip install nvidia-cuda-cuobjdump, or the CUDA toolkit's)"; exit 2; }
for side in base new; do
  "$CUOBJDUMP" -sass "$WORK/$side.cubin" > "$WORK/$side.sass"
  "$CUOBJDUMP" -res-usage "$WORK/$side.cubin" > "$WORK/$side.res"
done

python3 - "$WORK" <<'EOF'
import re, subprocess, sys
work = sys.argv[1]

def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.split("\n")
    return dict(zip(names, out))

def key(mangled):
    # Pairs base and new instantiations: the WINDOW argument's default (Lb0E, the last template
    # argument) is dropped from the mangled name.
    return re.sub(r"Lb0E(?=EEv)", "", mangled)

def pretty(mangled):
    d = demangle([mangled])[mangled]
    d = d.replace("ropex::cuda::", "").replace("__nv_bfloat16", "bf16").replace("void ", "")
    d = re.sub(r"\(sm90::Sm90Rope\)(\d)", lambda m: ["none", "q", "k", "anchors_q", "anchors_k"][int(m.group(1))], d)
    if ">(" in d: d = d[:d.rindex(">(") + 1]  # the parameter list
    return d

def sass(path):
    funcs, cur = {}, None
    for line in open(path):
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            cur = m.group(1); funcs[cur] = []; continue
        if cur is None: continue
        m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", line)
        if m: funcs[cur].append(m.group(1))
        if line.strip().startswith("/*"): raw.setdefault(cur, []).append(line.rstrip())
    return funcs

raw = {}

def regs(path):
    out, cur = {}, None
    for line in open(path):
        m = re.match(r"\s*Function (\S+):", line)
        if m: cur = m.group(1); continue
        m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:\d+ CONSTANT\[0\]:(\d+)", line)
        if m and cur: out[cur] = tuple(int(x) for x in m.groups()); cur = None
    return out

def norm(ins, params):
    s = re.sub(r"0x[0-9a-f]+\s*\*/", "*/", ins)              # encodings in comments, if any
    s = re.sub(r"`\([^)]*\)", "`(SYM)", s)                     # symbol references
    s = re.sub(r"(BRA|BRX|CALL\.REL(\.NOINC)?|BSSY(\.RECONVERGENT)?|WARPSYNC|JMP|BREAK|SSY|PBK)(\s+\S+)?\s+`?\(?0x[0-9a-f]+\)?",
               lambda m: m.group(0).split("0x")[0] + "TARGET", s)  # branch targets (absolute offsets)
    s = re.sub(r"\b(B\w+)\s+0x[0-9a-f]+$", r"\1 TARGET", s)
    if params:
        s = re.sub(r"c\[0x0\]\[0x[0-9a-f]+\]", "c[0x0][P]", s)
    return s

bs = sass(f"{work}/base.sass"); braw = raw; raw = {}
ns = sass(f"{work}/new.sass"); nraw = raw
br, nr = regs(f"{work}/base.res"), regs(f"{work}/new.res")
bk = {key(m): m for m in bs}
nk = {key(m): m for m in ns}
all_same = bool(bk) and bool(nk)
print(f"{'kernel (window 0)':52} {'raw':9} {'strict':9} {'params':9} {'instrs b/n':>11} {'regs b/n':>9} {'stack b/n':>9} {'param bytes b/n':>15}")
for k in sorted(set(bk) | set(nk)):
    if k not in bk or k not in nk:
        print(f"{pretty(k):52} only in {'new' if k in nk else 'base'}"); all_same = False; continue
    b, n = bs[bk[k]], ns[nk[k]]
    strict = [norm(x, False) for x in b] == [norm(x, False) for x in n]
    par = [norm(x, True) for x in b] == [norm(x, True) for x in n]
    all_same &= strict
    same_raw = braw.get(bk[k]) == nraw.get(nk[k])
    rb, rn = br.get(bk[k], (0, 0, 0)), nr.get(nk[k], (0, 0, 0))
    print(f"{pretty(bk[k]):52} {'identical' if same_raw else 'differs':9} {'identical' if strict else 'DIFFERS':9} "
          f"{'identical' if par else 'DIFFERS':9} {len(b):>5}/{len(n):<5} {rb[0]:>4}/{rn[0]:<4} {rb[1]:>4}/{rn[1]:<4} "
          f"{rb[2]:>7}/{rn[2]:<7}")
    if not strict:
        import difflib
        d = list(difflib.unified_diff([norm(x, False) for x in b], [norm(x, False) for x in n], "base", "new", n=1, lineterm=""))
        print("    first differences (strict):")
        for line in d[:24]: print("     ", line)
        print(f"    ... {sum(1 for l in d if l[:1] in '+-' and l[:3] not in ('+++', '---'))} changed lines in all")
sys.exit(0 if all_same else 1)
EOF
