#!/usr/bin/env bash
# The whole pg_platform test suite: set-up, lint, the in-server tests (cargo pgrx test),
# the end-to-end scripts under tests/e2e and a smoke run of the benchmarks.
# `.ci/run` calls exactly this. Works as root or as a user with sudo.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
# shellcheck source=lib.sh
. "$here/lib.sh"
cd "$root"
start=$SECONDS
log=$(mktemp -d)
passed=0
failed=0
# What failed, repeated at the very end: CI shows the tail of the output.
failures=()

count_cargo_results() {
    local p f
    p=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$1" | awk '{s += $4} END {print s + 0}')
    f=$(grep -Eo '[0-9]+ failed' "$1" | grep -Eo '^[0-9]+' | awk '{s += $1} END {print s + 0}')
    passed=$((passed + p)); failed=$((failed + f))
}

phase "setup" bash scripts/setup.sh || exit 1
phase "cargo fmt --check" cargo fmt --check || exit 1
phase "cargo clippy" cargo clippy --all-targets --quiet -- -D warnings || exit 1

# pgrx runs the test server as `postgres` (PostgreSQL refuses root) in a data directory
# that user owns; a leftover directory from an earlier run would make initdb fail.
pgdata_parent=/tmp/pg_platform-test
as_root rm -rf "$pgdata_parent"
as_root install -d -o postgres "$pgdata_parent"
phase "cargo pgrx test" cargo pgrx test "pg$PG_MAJOR" --runas postgres --pgdata "$pgdata_parent/pgdata" 2>&1 | tee "$log/pgrx.txt"
pgrx_rc=${PIPESTATUS[0]}
count_cargo_results "$log/pgrx.txt"
[ "$pgrx_rc" = 0 ] || failed=$((failed + (failed == 0)))
while read -r name; do failures+=("cargo pgrx test: $name"); done \
    < <(grep -Eo '^test [^ ]+ \.\.\. FAILED' "$log/pgrx.txt" | awk '{print $2}')
[ "$pgrx_rc" = 0 ] || [ "${#failures[@]}" -gt 0 ] || failures+=("cargo pgrx test (exit $pgrx_rc)")

# End-to-end scripts: each starts its own server and exits non-zero on failure.
# CI shows only the tail of the output: a failed script's last lines are repeated there.
tails=()
for t in tests/e2e/*.sh; do
    name=$(basename "$t" .sh)
    if phase "e2e $name.sh" bash "$t" 2>&1 | tee "$log/$name.txt"; [ "${PIPESTATUS[0]}" = 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1)); failures+=("e2e $name.sh"); tails+=("$name")
    fi
done

if phase "benchmarks (smoke)" bash benches/run.sh --smoke; then
    passed=$((passed + 1))
else
    failed=$((failed + 1)); failures+=("benchmarks (smoke)")
fi

echo "total time: $((SECONDS - start))s"
# A failed in-server test's own output (its panic message) is repeated too.
if [ "$pgrx_rc" != 0 ]; then
    awk '/^---- .* stdout ----$/ {show = 1; n = 0} /^(failures:|test result:)/ {show = 0}
         show && n++ < 30' "$log/pgrx.txt"
fi
for name in "${tails[@]}"; do
    echo "--- last lines of e2e $name.sh:"
    tail -n 25 "$log/$name.txt"
done
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
