#!/usr/bin/env bash
# The README's quickstart command, end to end, with its report checked.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp)
TRANSACTIONS=5000 CUSTOMERS=300 MERCHANTS=30 QUICKSTART_DIR=/tmp/pg_platform-e2e-quickstart \
    bash "$root/scripts/quickstart.sh" >"$out" 2>&1 || { cat "$out"; echo "quickstart failed"; exit 1; }
fail=0
expect() {
    if ! grep -qE -- "$1" "$out"; then echo "missing from the quickstart report: $1"; fail=1; fi
}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$(dirname "$0")/../../Cargo.toml" | head -1)
expect "^ pg_platform \\| ${version//./\\.} +\\| platform"
expect 'platform_pii_reader +\| f'
expect '^ postgres +\| +[0-9]+ \| t'                       # a worker serves the database
expect '^ transaction +\| +5000 \|'
expect 'generated 5000 transactions at [0-9]+ rows/s'
expect 'ERROR:  permission denied for table transaction'    # readonly cannot write
expect 'status change refunded -> successful is not allowed'
expect '^ successful +\| +0$'                                # rolled back: status kept, no row
expect '^ disputed +\| +1$'
expect '^ update +\| transaction_p20260101 +\| [0-9]+ +\| 5 '          # CDC: the committed change
expect '^ insert +\| transaction_state_change +\| [0-9]+ +\| 5 +\| cardholder opened a dispute'
expect '^ payments.transaction +\| +[0-9]+ +\| +0 +\| +0$'             # registered, partitions made
expect '^ payments.transaction +\| +0$'                                  # second pass: nothing to do
expect '^ +1 \| a1[0-9a-f]+\.\.\. +\| a1[0-9a-f]+\.\.\.$'                # the table holds ciphertext
expect '^ +1 \| [A-Z]\*+ [A-Z]\*+ +\| [a-z]\*+@example\.[a-z]+$'          # the analyst sees masks
expect 'Index Cond: \(email_blind_index = platform.protected_blind_index'   # lookup by e-mail uses the index
expect '^ +1 \| +\| *$'                                                  # customer 1 forgotten
expect '^ quickstart_analyst +\| payments.customer +\| email +\| +1 \| +0 \| +2$'
expect '^ +0$'                                                          # rolled back: no audit row
expect '^ UPDATE +\| payments.transaction +\| +1 \|'                   # the status change...
expect '^ INSERT +\| payments.transaction_state_change +\| +2 \|'      # ...and its state-change row
expect '^ t +\| t +\| *$'                                               # the chain verifies
expect 'ERROR:  platform.audit_log[a-z0-9_]* is append-only'
expect '^ legitimate +\| +[0-9]+$'                                        # fraud: labelled in the data
expect '^ (card_testing|account_takeover|compromised_merchant) +\| +[0-9]+$'
expect '^ gbdt v[0-9]+ +\| +[0-9]+ \| +[0-9]+ \| +0\.[0-9]+'                # trained in SQL, evaluated
expect '^ built-in anomaly score +\| +[0-9]+ \| +[0-9]+ \| +0\.[0-9]+'
expect '^ +[0-9]+ \| +9000(\.00)? \| review +\| +[0-9.]+ \| fraud review: .*rule quickstart_review_large \(review\)'
expect 'ERROR:  payment blocked by fraud scoring'
expect '^ +0$'                                                          # the blocked payment is not stored
expect '^ payments.transaction +\| done +\| +[0-9]+$'                     # lake: backfilled
expect '^ +2 \| +2$'                                                     # the refund and its state-change row
expect "read_parquet\('.*/lake/current/payments/transaction/[0-9A-F]{16}\.parquet'\)"
expect '^ reserved +\| t +\| t +\| *$'                                    # caught up, no error
expect 'scenario complete'
expect 'removed'
[ ! -d /tmp/pg_platform-e2e-quickstart ] || { echo "the throwaway server was not cleaned up"; fail=1; }
[ "$fail" = 0 ] || { cat "$out"; exit 1; }
echo "quickstart report checked"
