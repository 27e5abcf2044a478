# Row-change audit against pgaudit (statements only, pgaudit.log = 'write') and a PL/pgSQL
# trigger writing to_jsonb(OLD/NEW) into an audit table, the usual hand-made audit:
# pgbench -N (tps, 4 and 8 clients, pgbench_accounts and pgbench_history audited) and a
# 100k-row INSERT ... SELECT (rows/s), on one server in one run; for pgbench also the CPU
# time per transaction of the whole machine. With and without audit
# (and the PL/pgSQL trigger's insert) alternate 5 times (medians).
# shellcheck shell=bash
if [ "$SMOKE" = 1 ]; then secs=2; rows=5000; scale=1; else secs=20; rows=100000; scale=10; fi
db=bench_audit
sql postgres "DROP DATABASE IF EXISTS $db" "CREATE DATABASE $db" >/dev/null
sql $db "CREATE EXTENSION pg_platform" "ALTER DATABASE $db SET platform.audit_ddl = off" >/dev/null
pgbench -i -q -s "$scale" -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres "$db" >/dev/null 2>&1 \
    || { echo "bench audit: pgbench -i failed" >&2; exit 1; }
# tps CLIENTS SIDE: pgbench -N for $secs seconds (a checkpoint first, so runs start alike).
# Each run's share of CPU time the hypervisor took (steal, from /proc/stat) goes to
# $steal: on a shared virtual machine it moves the figures more than anything measured.
# The CPU time the whole machine spent per transaction (user, system and interrupts: all
# processes, the server's background ones and pgbench included; not idle, I/O wait or
# steal) goes to $cpu as "SIDE microseconds": what the audit costs, which the machine's
# neighbours and the disk's speed move much less than they move tps.
steal=$(mktemp); cpu=$(mktemp)
tick_us=$((1000000 / $(getconf CLK_TCK)))
cpu_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9, $2 + $3 + $4 + $7 + $8}' /proc/stat; }
tps() {
    sql $db "CHECKPOINT" >/dev/null
    local before after out
    before=$(cpu_ticks)
    out=$(pgbench -N -n -c "$1" -j 2 -T "$secs" -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres "$db" 2>/dev/null)
    after=$(cpu_ticks)
    echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1
    echo "$before $after" | awk '{t = $4 - $1; v = t > 0 ? 100 * ($5 - $2) / t : 0; printf "%.0f%% ", v}' >>"$steal"
    echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' | head -1 \
        | awk -v side="$2" -v b="$before" -v a="$after" -v us="$tick_us" \
            '{split(b, x, " "); split(a, y, " "); if ($1 > 0) printf "%s %.1f\n", side, (y[3] - x[3]) * us / $1}' >>"$cpu"
}
# cpu_of SIDE: the median CPU per transaction of SIDE's runs.
cpu_of() { median $(awk -v s="$1" '$1 == s {print $2}' "$cpu"); }
# rate SQL: rows per second of one INSERT ... SELECT, timed inside the server.
rate() {
    sql $db "TRUNCATE ins" "DO \$\$ DECLARE t timestamptz; n bigint; BEGIN
               t := clock_timestamp();
               EXECUTE \$q\$$1\$q\$; GET DIAGNOSTICS n = ROW_COUNT;
               PERFORM set_config('bench.rate', round(n / extract(epoch FROM clock_timestamp() - t))::text, false);
             END \$\$" "SELECT current_setting('bench.rate')" | tail -1
}
insert="INSERT INTO ins SELECT g, g % 100, 'customer ' || g, g * 1.5 FROM generate_series(1, $rows) g"
audited="pgbench_accounts pgbench_history ins"
sql $db "CREATE TABLE ins (id int PRIMARY KEY, a int, b text, c numeric(12,2))" \
        "CREATE TABLE plpgsql_audit (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), tbl text, op text,
                                     who text, old jsonb, new jsonb)" \
        "CREATE FUNCTION plpgsql_audit() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN
           INSERT INTO plpgsql_audit (tbl, op, who, old, new)
           VALUES (TG_TABLE_NAME, TG_OP, current_user, CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
                   CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
           RETURN NULL; END \$\$" >/dev/null
audit_on() { for t in $audited; do sql $db "SELECT platform.audit_table('$t')" >/dev/null; done; }
audit_off() { for t in $audited; do sql $db "SELECT platform.unaudit_table('$t')" >/dev/null; done; }
# The figures with and without audit (and the PL/pgSQL trigger's insert rate) alternate,
# each the median of its runs: a run moves with where it falls in the checkpoint cycle and
# with the machine's neighbours by more than the audit costs. Five rounds, which of the two
# goes first changing from round to round, so that a drift of the machine (or the tables'
# growth) over the bench favours neither.
[ "$SMOKE" = 1 ] && rounds=1 || rounds=5
plain_runs=(); ours_runs=(); plain8_runs=(); ours8_runs=(); plain_ins_runs=(); ours_ins_runs=(); plpgsql_ins_runs=()
plpgsql_on() { for t in $audited; do sql $db "CREATE TRIGGER plpgsql_audit AFTER INSERT OR UPDATE OR DELETE ON $t FOR EACH ROW EXECUTE FUNCTION plpgsql_audit()" >/dev/null; done; }
plpgsql_off() { for t in $audited; do sql $db "DROP TRIGGER plpgsql_audit ON $t" >/dev/null; done; }
plain_round() { plain_runs+=("$(tps 4 plain)"); plain8_runs+=("$(tps 8 plain8)"); plain_ins_runs+=("$(rate "$insert")"); }
ours_round() {
    audit_on; ours_runs+=("$(tps 4 ours)"); ours8_runs+=("$(tps 8 ours8)"); ours_ins_runs+=("$(rate "$insert")"); audit_off
}
for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) = 1 ]; then plain_round; ours_round; else ours_round; plain_round; fi
    plpgsql_on; plpgsql_ins_runs+=("$(rate "$insert")"); plpgsql_off
done
plain=$(median "${plain_runs[@]}"); ours=$(median "${ours_runs[@]}")
plain8=$(median "${plain8_runs[@]}"); ours8=$(median "${ours8_runs[@]}")
plain_ins=$(median "${plain_ins_runs[@]}"); ours_ins=$(median "${ours_ins_runs[@]}"); plpgsql_ins=$(median "${plpgsql_ins_runs[@]}")
echo "bench audit: pgbench -N, tps of each run: 4 clients no audit ${plain_runs[*]}, audited ${ours_runs[*]}; 8 clients no audit ${plain8_runs[*]}, audited ${ours8_runs[*]}" >&2
echo "bench audit: CPU stolen by the hypervisor in each pgbench run, in order: $(cat "$steal")" >&2
echo "bench audit: CPU per transaction (µs, all processes) of each 4-client run: no audit $(awk '$1 == "plain" {printf "%s ", $2}' "$cpu"), audited $(awk '$1 == "ours" {printf "%s ", $2}' "$cpu")" >&2
plain_cpu=$(cpu_of plain); ours_cpu=$(cpu_of ours)
echo "bench audit: $rows-row insert, rows/s of each run: no audit ${plain_ins_runs[*]}, audited ${ours_ins_runs[*]}, PL/pgSQL trigger ${plpgsql_ins_runs[*]}" >&2
plpgsql_on; plpgsql=$(tps 4 plpgsql); plpgsql_off
plpgsql_cpu=$(cpu_of plpgsql)
pgaudit=0
if [ "$(sql postgres "SELECT current_setting('shared_preload_libraries') LIKE '%pgaudit%'")" = t ]; then
    sql $db "CREATE EXTENSION pgaudit" "ALTER DATABASE $db SET pgaudit.log = 'write'" >/dev/null
    pgaudit=$(tps 4 pgaudit)
    sql $db "ALTER DATABASE $db RESET pgaudit.log" "DROP EXTENSION pgaudit" >/dev/null
fi
[ "$(sql $db "SELECT count(*) FROM platform.audit_log WHERE table_name = 'public.ins' AND operation = 'INSERT'")" = "$((rounds * rows))" ] \
    || { echo "bench audit: the audit log does not hold one row per inserted row" >&2; exit 1; }
sql $db "SELECT platform.seal_audit()" >/dev/null
[ "$(sql $db "SELECT intact FROM platform.verify_audit()")" = t ] || { echo "bench audit: the chain does not verify" >&2; exit 1; }
pgaudit_cpu=$(cpu_of pgaudit)
rm -f "$steal" "$cpu"
sql postgres "DROP DATABASE $db" >/dev/null
result "Audit" "pgbench -N, 4 clients, full row images (tps)" "$ours" "no audit" "$plain" higher
result "Audit" "pgbench -N, 4 clients, full row images (tps)" "$ours" "pgaudit, statements only" "$pgaudit" higher
result "Audit" "pgbench -N, 4 clients, full row images (tps)" "$ours" "PL/pgSQL to_jsonb trigger" "$plpgsql" higher
result "Audit" "pgbench -N, 4 clients, CPU per transaction, all processes (µs)" "$ours_cpu" "no audit" "$plain_cpu" lower
result "Audit" "pgbench -N, 4 clients, CPU per transaction, all processes (µs)" "$ours_cpu" "pgaudit, statements only" "${pgaudit_cpu:-0}" lower
result "Audit" "pgbench -N, 4 clients, CPU per transaction, all processes (µs)" "$ours_cpu" "PL/pgSQL to_jsonb trigger" "$plpgsql_cpu" lower
result "Audit" "pgbench -N, 8 clients (tps)" "$ours8" "no audit, 8 clients" "$plain8" higher
result "Audit" "$rows-row INSERT ... SELECT (rows/s)" "$ours_ins" "PL/pgSQL to_jsonb trigger" "$plpgsql_ins" higher
result "Audit" "$rows-row INSERT ... SELECT (rows/s)" "$ours_ins" "no audit" "$plain_ins" higher
