#!/usr/bin/env bash
# Whether a change leaves kernels' machine code as it was, without a GPU: compiles one translation
# unit that instantiates the kernels (bench/gpu/sass/*.cu) twice, against `git archive BASE include`
# and against this tree's include/, to sm_90a cubins, then compares each kernel's SASS instruction
# listing (addresses, encodings, symbol names and branch targets normalised away) and register counts.
#   usage: bench/gpu/sass_same.sh TU [BASE=main] [WORKDIR=build-sass/<TU name>]   (nvcc 12.8+ / 13, no GPU)
#   e.g.   bench/gpu/sass_same.sh bench/gpu/sass/decode.cu main
# Kernels pair by mangled name (a trailing template argument `false` that only one side spells out,
# a newly added defaulted flag, is dropped first). Three listings per kernel are compared:
#   raw:    cuobjdump's lines as they are (addresses and encodings included)
#   strict: the instructions with their operands (constant-bank offsets included)
#   params: the same with kernel-parameter offsets c[0x0][...] replaced by "c[0x0][P]" (only
#           differs from strict if the parameter struct's layout changed)
# Exit status 0 iff every kernel is on both sides and identical under "strict". Also printed:
# registers, stack bytes and kernel-parameter bytes (CONSTANT[0]) of each side.
# The base cubin is reused while BASE's commit and the TU are unchanged; SASS_REUSE=1 compares the
# last run's cubins again. cuobjdump (and the nvdisasm it runs, looked up beside it): $CUOBJDUMP,
# PATH, the CUDA toolkit's, or the pip packages nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm
# (13.2 reads nvcc 13.0 cubins).
set -uo pipefail
[ $# -ge 1 ] || { sed -n 2,6p "$0"; exit 2; }
ROOT=$(git rev-parse --show-toplevel)
TU=$(realpath "$1")
BASE=${2:-main}
WORK=${3:-build-sass/$(basename "$TU" .cu)}
cd "$ROOT"
BASE_SHA=$(git rev-parse --verify "$BASE^{commit}") || { echo "no commit $BASE"; exit 2; }
mkdir -p "$WORK/base"

if [ "${SASS_REUSE:-0}" != 1 ]; then
  INC=()
  for d in /usr/include/eigen3 .deps/include .deps/include/eigen3; do [ -d "$d" ] && INC+=(-I"$d"); done
  FLAGS=(-cubin -gencode arch=compute_90a,code=sm_90a -O3 -DNDEBUG -DROPEX_HAS_CUDA=1 -DROPEX_CUDA_SM90A=1
         --expt-relaxed-constexpr --extended-lambda -std=c++20 "${INC[@]}")
  stamp="$BASE_SHA $(sha256sum "$TU" | cut -c1-16) ${FLAGS[*]}"
  t0=$(date +%s)
  p1=
  if [ -f "$WORK/base.cubin" ] && [ "$(cat "$WORK/base.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "== base $BASE (${BASE_SHA:0:7}): cubin of an earlier run"
  else
    rm -rf "$WORK/base/include" "$WORK/base.cubin"
    git archive "$BASE_SHA" include | tar -x -C "$WORK/base"
    echo "== compiling base $BASE (${BASE_SHA:0:7})"
    nvcc "${FLAGS[@]}" -I"$WORK/base/include" "$TU" -o "$WORK/base.cubin" > "$WORK/base.log" 2>&1 &
    p1=$!
  fi
  echo "== compiling this tree"
  nvcc "${FLAGS[@]}" -Iinclude "$TU" -o "$WORK/new.cubin" > "$WORK/new.log" 2>&1 &
  p2=$!
  ok=1
  if [ -n "$p1" ]; then
    if wait "$p1"; then echo "$stamp" > "$WORK/base.stamp"; else echo "base compile failed"; tail -30 "$WORK/base.log"; ok=0; fi
  fi
  wait $p2 || { echo "new compile failed"; tail -30 "$WORK/new.log"; ok=0; }
  [ $ok = 1 ] || exit 2
  echo "   compiled in $(( $(date +%s) - t0 )) s"
fi

CUOBJDUMP=${CUOBJDUMP:-$(command -v cuobjdump || true)}
[ -n "$CUOBJDUMP" ] || [ ! -x /usr/local/cuda/bin/cuobjdump ] || CUOBJDUMP=/usr/local/cuda/bin/cuobjdump
if [ -z "$CUOBJDUMP" ]; then
  t=$(python3 -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13/bin/cuobjdump"))' 2>/dev/null)
  [ -n "$t" ] && [ -x "$t" ] && CUOBJDUMP=$t
fi
[ -n "$CUOBJDUMP" ] || { echo "no cuobjdump (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm, or set CUOBJDUMP)"; exit 2; }
export PATH="$(dirname "$CUOBJDUMP"):$PATH"
for side in base new; do
  "$CUOBJDUMP" -sass "$WORK/$side.cubin" > "$WORK/$side.sass" || exit 2
  "$CUOBJDUMP" -res-usage "$WORK/$side.cubin" > "$WORK/$side.res" || exit 2
done

python3 - "$WORK" <<'PY'
import difflib, re, subprocess, sys
work = sys.argv[1]

def demangle(name):
    return subprocess.run(["c++filt"], input=name, capture_output=True, text=True).stdout.strip()

def key(mangled):  # a trailing `false` template argument (a defaulted flag one side spells out) is dropped
    return re.sub(r"Lb0E(?=EEv)", "", mangled)

def pretty(mangled):
    d = demangle(mangled).replace("ropex::cuda::", "").replace("detail::", "").replace("__nv_bfloat16", "bf16")
    d = d.replace("void ", "")
    d = re.sub(r"\(sm90::Sm90Rope\)(\d)", lambda m: ["none", "q", "k", "anchors_q", "anchors_k"][int(m.group(1))], d)
    return d[:d.rindex(">(") + 1] if ">(" in d else d  # without the parameter list

def sass(path):
    funcs, raw, cur = {}, {}, None
    for line in open(path):
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            cur = m.group(1); funcs[cur] = []; continue
        if cur is None: continue
        m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", line)
        if m: funcs[cur].append(m.group(1))
        if line.strip().startswith("/*"): raw.setdefault(cur, []).append(line.rstrip())
    return funcs, raw

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
    if params: s = re.sub(r"c\[0x0\]\[0x[0-9a-f]+\]", "c[0x0][P]", s)
    return s

(bs, braw), (ns, nraw) = sass(f"{work}/base.sass"), sass(f"{work}/new.sass")
br, nr = regs(f"{work}/base.res"), regs(f"{work}/new.res")
bk, nk = {key(m): m for m in bs}, {key(m): m for m in ns}
all_same = bool(bk) and bool(nk)
width = max([len(pretty(m)) for m in list(bs) + list(ns)] + [6])
print(f"{'kernel':{width}} {'raw':9} {'strict':9} {'params':9} {'instrs b/n':>11} {'regs b/n':>9} {'stack b/n':>9} {'param bytes b/n':>15}")
for k in sorted(set(bk) | set(nk)):
    if k not in bk or k not in nk:
        print(f"{pretty(k):{width}} only in {'new' if k in nk else 'base'}"); all_same = False; continue
    b, n = bs[bk[k]], ns[nk[k]]
    strict = [norm(x, False) for x in b] == [norm(x, False) for x in n]
    par = [norm(x, True) for x in b] == [norm(x, True) for x in n]
    all_same &= strict
    same_raw = braw.get(bk[k]) == nraw.get(nk[k])
    rb, rn = br.get(bk[k], (0, 0, 0)), nr.get(nk[k], (0, 0, 0))
    print(f"{pretty(bk[k]):{width}} {'identical' if same_raw else 'differs':9} {'identical' if strict else 'DIFFERS':9} "
          f"{'identical' if par else 'DIFFERS':9} {len(b):>5}/{len(n):<5} {rb[0]:>4}/{rn[0]:<4} {rb[1]:>4}/{rn[1]:<4} "
          f"{rb[2]:>7}/{rn[2]:<7}")
    if not strict:
        d = list(difflib.unified_diff([norm(x, False) for x in b], [norm(x, False) for x in n], "base", "new", n=1, lineterm=""))
        print("    first differences (strict):")
        for line in d[:24]: print("     ", line)
        print(f"    ... {sum(1 for l in d if l[:1] in '+-' and l[:3] not in ('+++', '---'))} changed lines in all")
print(f"{len(set(bk) & set(nk))} kernels on both sides: " + ("every one identical" if all_same else "NOT all identical"))
sys.exit(0 if all_same else 1)
PY
