#!/usr/bin/env bash
# Window-0 prefill kernels against a base tree, without a GPU: bench/gpu/sass_same.sh on
# bench/gpu/sass/flash_window0.cu, the window-0 flash kernels (bf16; head_dim 128 fa2 tilings;
# every sm90 RoPE mode), against the tree before the sliding window (837bda5) by default.
#   usage: bench/gpu/sass_window0.sh [BASE=837bda5] [WORKDIR=build-sass-w0]   (nvcc 12.8+ / 13, no GPU)
# Causal/non-causal and GQA are run-time arguments of the same kernels, so these instantiations
# are the code every window-0 call (shape.window == 0) runs on those paths. Exit status and
# listings: see sass_same.sh.
ROOT=$(git rev-parse --show-toplevel)
exec "$ROOT/bench/gpu/sass_same.sh" "$ROOT/bench/gpu/sass/flash_window0.cu" "${1:-837bda5}" "${2:-build-sass-w0}"
