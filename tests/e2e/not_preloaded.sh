#!/usr/bin/env bash
# Without shared_preload_libraries everything that needs no worker works, and what needs
# the worker says so with SQLSTATE 55000 and a hint.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
throwaway_server e2e-nopreload no
q() { psql -X -q -At -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -v VERBOSITY=verbose "$@"; }
q -c "CREATE EXTENSION pg_platform"
q -c "SELECT platform.create_payments_schema('p')" >/dev/null
n=$(q -c "SELECT rows_inserted FROM platform.generate_payments('p', 20, 3, 100) WHERE table_name = 'transaction'")
[ "$n" = 100 ] || { echo "generator without preload: expected 100 rows, got $n"; exit 1; }
q -c "SELECT platform.apply_rbac('p')" >/dev/null
err=$(q -c "\\set VERBOSITY verbose" -c "SELECT * FROM platform.worker_status()" 2>&1 || true)
echo "$err" | grep -q "ERROR:  55000: platform.worker_status() needs pg_platform's background worker, but pg_platform is not in shared_preload_libraries" \
    || { echo "unexpected: $err"; exit 1; }
echo "$err" | grep -q "HINT:  Add pg_platform to shared_preload_libraries" || { echo "no hint: $err"; exit 1; }
err=$(q -c "\\set VERBOSITY verbose" -c "SELECT * FROM platform.pii_access" 2>&1 || true)
echo "$err" | grep -q "ERROR:  55000: platform.pii_access needs pg_platform in shared_preload_libraries" \
    || { echo "unexpected from pii_access: $err"; exit 1; }
# Fraud scoring needs no preloading; only its shared counters do.
[ "$(q -c "SELECT risk_level FROM platform.fraud_score('4000-1', 10, now())")" = normal ] \
    || { echo "fraud_score does not work without preloading"; exit 1; }
err=$(q -c "\\set VERBOSITY verbose" -c "SELECT * FROM platform.fraud_stats()" 2>&1 || true)
echo "$err" | grep -q "ERROR:  55000: platform.fraud_stats needs pg_platform in shared_preload_libraries" \
    || { echo "unexpected from fraud_stats: $err"; exit 1; }
echo "not preloaded: generator, RBAC and fraud scoring work, worker_status, pii_access and fraud_stats explain what is missing"
