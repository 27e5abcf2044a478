#!/usr/bin/env bash
# pg_platform benchmarks: builds and installs the extension (optimised), starts its own
# server, runs the named benchmarks (all by default) and prints one table of figures and
# ratios against the tools we must beat, measured side by side in this run.
#   bash benches/run.sh                  full sizes, release build
#   bash benches/run.sh generator        only the named benchmark(s)
#   bash benches/run.sh --smoke          tiny sizes, debug build: checks the benchmarks run
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
# shellcheck source=../scripts/lib.sh
. "$root/scripts/lib.sh"
cd "$root"

SMOKE=0
names=()
for a in "$@"; do
    case "$a" in
        --smoke) SMOKE=1 ;;
        *) names+=("$a") ;;
    esac
done
export SMOKE

if [ "$SMOKE" = 1 ]; then
    phase "install (debug)" bash scripts/install.sh
else
    phase "install (release)" bash scripts/install.sh --release
fi
BENCH_DIR=${BENCH_DIR:-/tmp/pg_platform-bench}
stop_server "$BENCH_DIR"
BENCH_PORT=$(free_port)
# pgaudit (a tool the audit benchmark compares with) must be preloaded to work at all.
[ -f "$(pg_config --pkglibdir)/pgaudit.so" ] && export EXTRA_PRELOAD=pgaudit
phase "start server" start_server "$BENCH_DIR" "$BENCH_PORT" yes
trap 'stop_server "$BENCH_DIR"' EXIT
export BENCH_DIR BENCH_PORT

# sql DB QUERY...: run queries on the bench server, print their values.
sql() {
    local db=$1; shift
    local args=()
    for q in "$@"; do args+=(-c "$q"); done
    PGOPTIONS='-c client_min_messages=warning' \
        psql -X -q -At -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -d "$db" -v ON_ERROR_STOP=1 "${args[@]}"
}
# result NAME METRIC OURS BASELINE THEIRS BETTER: one row of the report; BETTER is
# "higher" or "lower" and orients the ratio so that > 1 always means we are ahead.
results=$(mktemp)
result() {
    local ratio
    ratio=$(awk -v o="$3" -v t="$5" -v b="$6" 'BEGIN { if (o <= 0 || t <= 0) print "n/a"; else if (b == "higher") printf "%.2fx", o / t; else printf "%.2fx", t / o }')
    printf '%s|%s|%s|%s|%s|%s\n' "$1" "$2" "$3" "$4" "$5" "$ratio" >>"$results"
}
# median VALUES...: the middle one (of an even count, the lower middle).
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
export -f sql result median
export results

for f in benches/bench_*.sh; do
    name=$(basename "$f" .sh); name=${name#bench_}
    if [ ${#names[@]} -gt 0 ] && ! printf '%s\n' "${names[@]}" | grep -qx "$name"; then continue; fi
    # shellcheck source=/dev/null
    phase "bench $name" bash -c ". '$f'" || exit 1
done

echo
echo "pg_platform benchmarks ($( [ "$SMOKE" = 1 ] && echo 'smoke sizes, debug build: figures mean nothing' || echo 'release build'); $(nproc) cores; $(pg_config --version))"
{
    echo "benchmark|metric|pg_platform|compared with|their figure|advantage"
    cat "$results"
} | column -t -s '|'
echo "advantage > 1.00x means pg_platform is ahead of the compared tool on that metric."
