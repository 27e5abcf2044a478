#!/usr/bin/env bash
# ALTER EXTENSION pg_platform UPDATE from every earlier version gives the same extension as
# a fresh CREATE EXTENSION of the current one (partitions, which are data, aside):
# functions (signatures, volatility,
# strictness, privileges), tables, views and their columns, indexes and privileges, operator classes, event
# triggers, configuration tables kept by pg_dump. The earlier versions' install scripts
# are kept, frozen, in tests/upgrade/.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
current=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
extdir="$(pg_config --sharedir)/extension"
throwaway_server e2e-upgrade no
q() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -At -h "$dir" -p "$port" -U postgres -d "$1" -v ON_ERROR_STOP=1 -c "$2"; }
describe="
SELECT 'function ' || p.oid::regprocedure || ' -> ' || pg_get_function_result(p.oid) || ' ' || p.provolatile::text || p.proisstrict::text
       || ' secdef=' || p.prosecdef::text || ' acl=' || coalesce(p.proacl::text, 'default')
  FROM pg_proc p WHERE p.pronamespace = 'platform'::regnamespace
UNION ALL
SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' acl=' || coalesce(c.relacl::text, 'default')
       || ' options=' || coalesce(c.reloptions::text, 'default')
  FROM pg_class c WHERE c.relnamespace = 'platform'::regnamespace AND NOT c.relispartition
UNION ALL
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull::text
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relnamespace = 'platform'::regnamespace AND NOT c.relispartition
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
 WHERE c.relnamespace = 'platform'::regnamespace AND NOT c.relispartition
UNION ALL
SELECT 'operator class ' || o.opcname || ' ' || a.amname || ' ' || o.opcintype::regtype
  FROM pg_opclass o JOIN pg_am a ON a.oid = o.opcmethod WHERE o.opcnamespace = 'platform'::regnamespace
UNION ALL
SELECT 'event trigger ' || evtname || ' ' || evtevent || ' ' || coalesce(evttags::text, '') || ' ' || evtfoid::regproc
  FROM pg_event_trigger
UNION ALL
SELECT 'config ' || unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'pg_platform'
UNION ALL
SELECT 'view ' || c.relname || ' ' || md5(pg_get_viewdef(c.oid)) FROM pg_class c
 WHERE c.relnamespace = 'platform'::regnamespace AND c.relkind = 'v'
ORDER BY 1"
q postgres "CREATE DATABASE fresh" >/dev/null
q fresh "CREATE EXTENSION pg_platform" >/dev/null
q fresh "$describe" >"$dir/fresh.txt"
[ "$(wc -l <"$dir/fresh.txt")" -gt 60 ] || { echo "the description of a fresh install is too short"; cat "$dir/fresh.txt"; exit 1; }
[ "$(q fresh "SELECT extversion FROM pg_extension WHERE extname = 'pg_platform'")" = "$current" ] \
    || { echo "a fresh install is not version $current"; exit 1; }
for old in "$root"/tests/upgrade/pg_platform--*.sql; do
    version=$(basename "$old" .sql); version=${version#pg_platform--}
    as_root cp "$old" "$extdir/"
    db="from_${version//./_}"
    q postgres "CREATE DATABASE $db" >/dev/null
    q "$db" "CREATE EXTENSION pg_platform VERSION '$version'" >/dev/null
    if [ "$version" = 0.3.0 ]; then
        # An audit log written and sealed before the update (the new library on the 0.3.0
        # schema writes to the plain table).
        q "$db" "CREATE TABLE public.audited (id int PRIMARY KEY, v text);
                 SELECT platform.audit_table('public.audited');
                 INSERT INTO public.audited SELECT g, 'before' FROM generate_series(1, 20) g" >/dev/null
        q "$db" "SELECT platform.seal_audit()" >/dev/null
    fi
    q "$db" "ALTER EXTENSION pg_platform UPDATE" >/dev/null
    if [ "$version" = 0.3.0 ]; then
        # The 0.3.0 table is the first partition, its blocks still verify, and the log goes
        # on in monthly partitions. Rows written on the 0.3.0 schema keep who and from where
        # on each row (and an id per row, its sequence stepping by 1); after the update a
        # statement stores them on its first row only, and ids stay unique.
        q "$db" "UPDATE public.audited SET v = 'after' WHERE id <= 5" >/dev/null
        q "$db" "SELECT platform.seal_audit()" >/dev/null
        got=$(q "$db" "SELECT (SELECT intact FROM platform.verify_audit()),
                              (SELECT count(*) || '/' || count(session_user_name) FROM platform.audit_log_before_0_4 WHERE operation = 'INSERT' AND table_name = 'public.audited'),
                              (SELECT count(*) || '/' || count(session_user_name) FROM platform.audit_log WHERE operation = 'UPDATE' AND table_name = 'public.audited'),
                              (SELECT count(session_user_name) FROM platform.audit_trail WHERE operation = 'UPDATE' AND table_name = 'public.audited'),
                              (SELECT count(*) = count(DISTINCT id) FROM platform.audit_log),
                              (SELECT count(*) > 1 FROM platform.partitions WHERE parent = 'platform.audit_log'::regclass),
                              (SELECT count(*) FROM platform.audit_block WHERE time_hi IS NULL AND time_lo IS NULL) > 0")
        [ "$got" = "t|20/20|5/1|5|t|t|t" ] || { echo "the 0.3.0 audit log did not come through the update as it should: $got"; exit 1; }
        echo "upgrade 0.3.0 -> $current: the audit log written before the update verifies as the first partition"
    fi
    as_root rm -f "$extdir/$(basename "$old")"
    [ "$(q "$db" "SELECT extversion FROM pg_extension WHERE extname = 'pg_platform'")" = "$current" ] \
        || { echo "ALTER EXTENSION UPDATE from $version did not reach $current"; exit 1; }
    q "$db" "$describe" >"$dir/$db.txt"
    if ! diff -u "$dir/fresh.txt" "$dir/$db.txt"; then
        echo "upgraded from $version differs from a fresh $current install (- fresh, + upgraded)"
        exit 1
    fi
    # The upgraded extension works: partition management on a new table.
    q "$db" "CREATE TABLE public.t (at timestamptz) PARTITION BY RANGE (at)" >/dev/null
    [ "$(q "$db" "SELECT partitions_created FROM platform.partition_by_time('public.t', 'at', '1 day', premake => 2)")" = 3 ] \
        || { echo "partition_by_time does not work after the upgrade from $version"; exit 1; }
    echo "upgrade $version -> $current: same objects, privileges and configuration as a fresh install"
done
