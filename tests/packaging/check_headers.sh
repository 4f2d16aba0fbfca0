#!/usr/bin/env bash
# Compiles ropex's public headers as a project that includes them sees them: through -I (not
# -isystem, so their own warnings show) under -Wall -Wextra -Wpedantic -Werror, syntax only.
#   check_headers.sh each CXX [FLAGS...]   one translation unit per header (each includes what it uses)
#   check_headers.sh all  CXX [FLAGS...]   one unit of every header, then instantiate.cpp, which
#                                          instantiates the public templates (whose warnings show only then)
# FLAGS: -fopenmp, -march=..., -isystem <Eigen's include dir>, -DROPEX_HAS_...=1 for the optional
# libraries found. ropex/xtensor.hpp is left out where xtensor is not installed; the CUDA headers
# (.cuh) are nvcc's.
set -euo pipefail
mode=$1 cxx=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(-std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic -Werror -I"$root/include" "$@")

mapfile -t headers < <(cd "$root/include" && find ropex -name '*.hpp' | LC_ALL=C sort)
if ! echo '#include <xtensor/xtensor.hpp>' | "$cxx" "${flags[@]}" -x c++ - 2>/dev/null; then
  echo "check_headers: xtensor not found by $cxx: ropex/xtensor.hpp not checked"
  mapfile -t headers < <(printf '%s\n' "${headers[@]}" | grep -v '^ropex/xtensor\.hpp$')
fi

case $mode in
  each)
    for h in "${headers[@]}"; do echo "#include <$h>" >"$work/${h//\//_}.cpp"; done
    # xargs exits non-zero when any unit fails; the compiler names the header and line.
    printf '%s\n' "$work"/*.cpp | xargs -P "${JOBS:-2}" -n 1 "$cxx" "${flags[@]}"
    ;;
  all)
    { printf '#include <%s>\n' "${headers[@]}"; echo "#include \"$here/instantiate.cpp\""; } >"$work/all.cpp"
    "$cxx" "${flags[@]}" "$work/all.cpp"
    ;;
  *)
    echo "usage: check_headers.sh each|all CXX [FLAGS...]" >&2
    exit 2
    ;;
esac
echo "check_headers: ${#headers[@]} headers clean ($mode: $cxx $*)"
