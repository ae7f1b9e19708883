#!/usr/bin/env bash
# Instructions per check of the core benchmarks, counted by valgrind's
# callgrind: unlike time, the count does not move with the machine's load or
# its caches, so two commits can be compared on a shared machine. It counts
# the caller, the shard and the runtime's scheduling together (GOMAXPROCS=1;
# valgrind runs one thread at a time anyway). Each benchmark runs twice, for
# N1 and N2 iterations; the difference divided by the extra checks cancels
# the setup (10k keys, the first fill).
#
#   bench/instructions.sh [package dir, default: the repository root]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pkg=${1:-$root}
command -v valgrind >/dev/null || { echo "valgrind is required" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
(cd "$pkg" && go test -c -o "$dir/flux.test" .)

count() { # benchmark iterations -> instructions
  (cd "$dir" && GODEBUG=asyncpreemptoff=1 GOMAXPROCS=1 valgrind --tool=callgrind \
    --callgrind-out-file="$dir/cg.out" ./flux.test -test.run '^$' \
    -test.bench "^$1\$" -test.benchtime "$2x" -test.count 1 2>&1) |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

per() { # benchmark checks-per-op n1 n2 unit
  local a b
  a=$(count "$1" "$3")
  b=$(count "$1" "$4")
  awk -v a="$a" -v b="$b" -v n=$(($4 - $3)) -v k="$2" -v name="$1" -v unit="$5" \
    'BEGIN { printf "%-22s %8.0f instructions/%s\n", name, (b - a) / (n * k), unit }'
}

per BenchmarkCheckBatch 64 2000 12000 key
per BenchmarkCheck 1 20000 120000 check
