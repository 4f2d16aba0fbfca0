#!/usr/bin/env bash
# Draws docs/img/limits-llama2.png: LLaMA-2's predicted extrapolation limit vs rotary base
# (Theorem 3, eq. 16a-16d), regimes colored, from `ropex predict --sweep-base` CSV.
#   scripts/plot_limits.sh [path/to/ropex] [out.png]
# Needs gnuplot (Debian: apt-get install gnuplot-nox).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ropex=${1:-${ROPEX:-$here/build/bin/ropex}}
out=${2:-$here/docs/img/limits-llama2.png}
[ -x "$ropex" ] || { echo "plot_limits.sh: ropex binary not found at $ropex (build it, or pass its path)" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "plot_limits.sh: gnuplot not found" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$(dirname "$out")"

# regime names -> numbers gnuplot can color by
to_dat() {
  awk -F, 'NR > 1 {
    id = 4
    if ($3 == "larger_base") id = 0; else if ($3 == "tune_length") id = 1
    else if ($3 == "small_base_quarter") id = 2; else if ($3 == "small_base_half") id = 3
    print $1, $2, id, $8 }'
}
for tune in 4096 16384; do
  "$ropex" predict --model llama2-7b --tune-len "$tune" --sweep-base 100,10000000,600 | to_dat > "$tmp/t$tune.dat"
done
# thresholds for the 16K curve and both critical bases, from the CLI's JSON
get() { "$ropex" predict --model llama2-7b --base 10000 --tune-len "$1" --json | sed -n "s/.*\"$2\": \([0-9.e+]*\).*/\1/p"; }
b0_4k=$(get 4096 critical_base); b0_16k=$(get 16384 critical_base)
b1=$(get 16384 beta_1); b2=$(get 16384 beta_2); b3=$(get 16384 beta_3)
# the paper's worked T_extra points (d = 128, d_extra = 92), from the 16b formula
for b in 10000 40000 80000 160000 400000 500000 600000 1000000; do
  "$ropex" predict --model llama2-7b --base "$b" --csv | awk -F, 'NR == 2 { print $1, $8 }'
done > "$tmp/paper.dat"

gnuplot <<EOF
set terminal pngcairo size 1100,680 font "DejaVu Sans,11"
set output "$out"
set title "LLaMA-2 (d = 128, T_{train} = 4096, pre-training base 10000): predicted extrapolation limit vs base"
set logscale xy
set xrange [100:1e7]
set yrange [100:2e6]
set format x "10^{%L}"
set format y "10^{%L}"
set xlabel "rotary base {/Symbol b} used for continued training"
set ylabel "predicted extrapolation limit (tokens)"
set key top left box opaque
set grid
set palette defined (0 "#d62728", 1 "#1f77b4", 2 "#2ca02c", 3 "#17becf", 4 "#9467bd")
set cbrange [0:4]
unset colorbox
set arrow from $b0_4k, graph 0 to $b0_4k, graph 1 nohead dt 2 lc rgb "#555555"
set arrow from $b0_16k, graph 0 to $b0_16k, graph 1 nohead dt 2 lc rgb "#1f77b4"
set arrow from $b1, graph 0 to $b1, graph 1 nohead dt 3 lc rgb "#2ca02c"
set arrow from $b2, graph 0 to $b2, graph 1 nohead dt 3 lc rgb "#17becf"
set arrow from $b3, graph 0 to $b3, graph 1 nohead dt 3 lc rgb "#9467bd"
set label "{/Symbol b}_0(4K) = 10000" at $b0_4k/1.25, 300 rotate by 90 font ",9"
set label sprintf("{/Symbol b}_0(16K) = %.0f", $b0_16k) at $b0_16k*1.08, 300 rotate by 90 font ",9"
set label sprintf("{/Symbol b}_1(16K) = %.0f", $b1) at $b1*1.08, 300 rotate by 90 font ",9"
set label sprintf("{/Symbol b}_2(16K) = %.0f", $b2) at $b2*1.08, 300 rotate by 90 font ",9"
set label sprintf("{/Symbol b}_3(16K) = %.0f", $b3) at $b3*1.08, 300 rotate by 90 font ",9"
set label "16b: hard bound 2{/Symbol p}{/Symbol b}^{92/128}" at 3e5, 2.2e4 font ",10" tc rgb "#d62728"
set label "small base (16d): no hard bound,\ndegrades smoothly past T_{tune}" at 130, 4.5e4 font ",10" tc rgb "#9467bd"
set label "{/Symbol b} ≤ {/Symbol b}_0 (16c): bound = T_{tune}" at 130, 1.0e4 font ",10" tc rgb "#1f77b4"
set label "tuned at T_{tune} = 16384" at 1.2e3, 1.9e4 font ",10"
set label "no tuning: T_{tune} = T_{train} = 4096" at 1.2e3, 3.1e3 font ",10"
plot "$tmp/t4096.dat" using 1:4 with lines dt 4 lc rgb "#999999" title "16b alone: 2{/Symbol p}{/Symbol b}^{d_{extra}/d}", \
     "$tmp/t4096.dat" using 1:2:3 with points pt 7 ps 0.45 lc palette z notitle, \
     "$tmp/t16384.dat" using 1:2:3 with points pt 5 ps 0.45 lc palette z notitle, \
     "$tmp/paper.dat" using 1:2 with points pt 6 ps 1.6 lw 2 lc rgb "black" title "paper's T_{extra} table", \
     1/0 with points pt 7 lc rgb "#d62728" title "larger base (16b)", \
     1/0 with points pt 7 lc rgb "#1f77b4" title "tune length (16c)", \
     1/0 with points pt 7 lc rgb "#2ca02c" title "small base: 1/4 period (16d)", \
     1/0 with points pt 7 lc rgb "#17becf" title "small base: 1/2 period", \
     1/0 with points pt 7 lc rgb "#9467bd" title "small base: full period"
EOF
echo "wrote $out"
