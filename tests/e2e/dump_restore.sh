#!/usr/bin/env bash
# pg_dump and pg_restore keep the set-up: the managed-schema registry (an extension
# configuration table), the grants of the access model, the generated data and the audit
# log with its hash chain.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
throwaway_server e2e-dump yes
q() { local db=$1; shift; PGOPTIONS='-c client_min_messages=warning' psql -X -q -At -h "$dir" -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"; }
q postgres -c "CREATE DATABASE src" -c "CREATE DATABASE dst"
q src -c "CREATE EXTENSION pg_platform" \
      -c "SELECT platform.create_payments_schema('pay')" \
      -c "SELECT count(*) FROM platform.generate_payments('pay', 50, 5, 500)" \
      -c "SELECT platform.apply_rbac('pay')" \
      -c "SELECT count(*) FROM platform.partition_by_time('pay.transaction', 'occurred_at', '1 month', premake => 2, retention => '7 years')" >/dev/null
q src -c "SELECT platform.audit_table('pay.transaction')" \
      -c "SELECT pay.change_transaction_status((SELECT min(id) FROM pay.transaction WHERE status_id = 2), 'refunded', 'before dump')" \
      -c "SELECT platform.seal_audit()" >/dev/null
audit_before=$(q src -c "SELECT count(*) FROM platform.audit_log WHERE operation = 'UPDATE'")
before=$(q src -c "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM pay.transaction t")
as_server_user pg_dump -h "$dir" -p "$port" -U postgres -Fc -f "$dir/src.dump" src
as_server_user pg_restore -h "$dir" -p "$port" -U postgres -d dst --exit-on-error "$dir/src.dump"
after=$(q dst -c "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM pay.transaction t")
[ "$before" = "$after" ] || { echo "restored transactions differ"; exit 1; }
[ "$(q dst -c "SELECT schema_name FROM platform.rbac_schema")" = pay ] || { echo "rbac_schema not restored"; exit 1; }
[ "$(q dst -c "SELECT has_table_privilege('platform_readonly', 'pay.transaction', 'SELECT'),
                      has_table_privilege('platform_readonly', 'pay.transaction', 'UPDATE'),
                      has_table_privilege('platform_developer', 'pay.transaction', 'UPDATE')")" = "t|f|t" ] \
    || { echo "grants not restored"; exit 1; }
[ "$(q dst -c "SELECT format('%s %s %s', parent, step, retention) FROM platform.partition_config WHERE parent <> 'platform.audit_log'::regclass")" = "pay.transaction 1 mon 7 years" ] \
    || { echo "partition_config not restored"; exit 1; }
[ "$(q dst -c "SELECT partitions_created + partitions_retired + privileges_synced FROM platform.run_maintenance('pay.transaction')")" = 0 ] \
    || { echo "restored partitions are not what maintenance expects"; exit 1; }
# The audit log and its chain come along, and still verify; the audit triggers still fire.
[ "$(q dst -c "SELECT count(*) FROM platform.audit_log WHERE operation = 'UPDATE'")" = "$audit_before" ] \
    || { echo "audit rows not restored"; exit 1; }
[ "$(q dst -c "SELECT intact FROM platform.verify_audit()")" = t ] || { echo "the restored audit chain does not verify"; exit 1; }
# The log's partitions and their registration are restored as they were (none made by the
# restore itself: its DDL waited in audit_log_pending).
[ "$(q src -c "SELECT string_agg(partition::text, ' ' ORDER BY partition::text) FROM platform.partitions WHERE parent = 'platform.audit_log'::regclass")" \
  = "$(q dst -c "SELECT string_agg(partition::text, ' ' ORDER BY partition::text) FROM platform.partitions WHERE parent = 'platform.audit_log'::regclass")" ] \
    || { echo "the audit log's partitions are not the dumped ones"; exit 1; }
[ "$(q dst -c "SELECT partitions_created + partitions_retired FROM platform.run_maintenance('platform.audit_log')")" = 0 ] \
    || { echo "the audit log's restored partitions are not what maintenance expects"; exit 1; }
# The restored database keeps working: the ACID status change and the event trigger.
q dst -c "SELECT pay.change_transaction_status((SELECT min(id) FROM pay.transaction WHERE status_id = 2), 'refunded', 'after restore')" >/dev/null
q dst -c "CREATE TABLE pay.after_restore (i int)"
[ "$(q dst -c "SELECT has_table_privilege('platform_readonly', 'pay.after_restore', 'SELECT')")" = t ] \
    || { echo "event trigger not active after restore"; exit 1; }
sealed=$(q dst -c "SELECT platform.seal_audit() > 0")
[ "$sealed|$(q dst -c "SELECT intact, (SELECT count(*) FROM platform.audit_log_pending) FROM platform.verify_audit()")" = "t|t|0" ] \
    || { echo "the audit chain does not go on after restore: sealed $sealed, $(q dst -c "SELECT problem FROM platform.verify_audit()")"; exit 1; }
[ "$(q dst -c "SELECT count(*) FROM platform.audit_log WHERE operation = 'UPDATE'")" -gt "$audit_before" ] \
    || { echo "audit triggers do not fire after restore"; exit 1; }
echo "dump and restore keep data, grants, the rbac registry, partition management and the audit log"
