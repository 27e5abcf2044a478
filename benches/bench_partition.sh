# Partition management: pg_platform's partition manager against pg_partman 4.7, each in
# its own database on the bench server, on the same work: register N parents (daily
# range partitions, premake P), one maintenance run that adds P partitions to each, one
# with nothing to do, and a no-op run over many parents. Every figure is the wall time of
# one psql session (autocommit, one statement per call, as a DBA runs them), in seconds.
# Both sides start at today's partition (partman would otherwise also make P partitions
# in the past) and hold one row per parent, dated now: partman's maintenance, in its
# default configuration, makes nothing for a parent without rows.
# shellcheck shell=bash
set -euo pipefail
if [ "$SMOKE" = 1 ]; then parents=3; premake=3; many=20; else parents=50; premake=30; many=1000; fi
premake2=$((premake * 2)) many_premake=4 partman_setup_limit=60 chunk=50
db_partman=bench_partman db_ours=bench_partition

fail() { echo "bench partition: $*" >&2; exit 1; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }'; }
# timed DB QUERY...: runs the queries in one session, prints the wall time in seconds.
timed() {
    local db=$1 t0; shift
    t0=$(date +%s.%N)
    sql "$db" "$@" >/dev/null || return 1
    since "$t0"
}
# new_db DB N SETUP...: a fresh database, SETUP run in it, parents bench.t1..tN (the same
# DDL for both tools) and a view of each parent's partition count, the default excluded.
new_db() {
    local db=$1 n=$2; shift 2
    sql postgres "DROP DATABASE IF EXISTS $db" "CREATE DATABASE $db" >/dev/null
    sql "$db" "$@" "CREATE SCHEMA bench" \
        "DO \$\$ BEGIN
           FOR i IN 1..$n LOOP
             EXECUTE format('CREATE TABLE bench.t%s (id bigint, ts timestamptz NOT NULL, amount numeric(12,2),
                                                     PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts)', i);
             EXECUTE format('CREATE INDEX ON bench.t%s (ts)', i);
             COMMIT;
           END LOOP;
         END \$\$" \
        "CREATE VIEW public.bench_counts AS
           SELECT p.oid::regclass AS parent,
                  count(c.oid) FILTER (WHERE pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT') AS n
             FROM pg_class p
             LEFT JOIN pg_inherits i ON i.inhparent = p.oid
             LEFT JOIN pg_class c ON c.oid = i.inhrelid
            WHERE p.relnamespace = 'bench'::regnamespace AND p.relkind = 'p'
            GROUP BY p.oid" >/dev/null
}
# add_rows DB N: one row dated now in each parent, after registration (before it no
# partition can take it).
add_rows() {
    sql "$1" "DO \$\$ BEGIN
                FOR i IN 1..$2 LOOP
                  EXECUTE format('INSERT INTO bench.t%s VALUES (1, now(), 1.00)', i);
                END LOOP;
              END \$\$" >/dev/null
}
# check_counts DB TOOL N MIN: every one of the N parents has at least MIN partitions.
check_counts() {
    local r np lo hi
    r=$(sql "$1" "SELECT count(*) || ' ' || coalesce(min(n), 0) || ' ' || coalesce(max(n), 0) FROM public.bench_counts")
    read -r np lo hi <<<"$r"
    if [ "$np" != "$3" ] || [ "$lo" -lt "$4" ]; then
        fail "$2: expected $3 parents with at least $4 partitions each (default excluded), found $np parents with $lo..$hi"
    fi
    echo "$2: $np parents, $lo..$hi partitions each (default excluded)"
}
snapshot() { sql "$1" "DROP TABLE IF EXISTS public.bench_before" "CREATE TABLE public.bench_before AS SELECT * FROM public.bench_counts" >/dev/null; }
# delta DB: "min max" partitions made per parent since the last snapshot.
delta() { sql "$1" "SELECT min(a.n - b.n) || ' ' || max(a.n - b.n) FROM public.bench_counts a JOIN public.bench_before b USING (parent)"; }
# check_added DB TOOL MIN: every parent gained at least MIN partitions since the snapshot.
check_added() {
    local lo hi
    read -r lo hi <<<"$(delta "$1")"
    if [ -z "$lo" ] || [ "$lo" -lt "$3" ]; then
        fail "$2: maintenance should have added $3 partitions to every parent, it added ${lo:-?}..${hi:-?}"
    fi
    echo "$2: maintenance added $lo..$hi partitions per parent"
}
# check_noop DB TOOL: a maintenance run with nothing to do made nothing (a day boundary
# crossed during the run would make one; noted, not fatal).
check_noop() {
    local lo hi
    read -r lo hi <<<"$(delta "$1")"
    if [ "$lo" != 0 ] || [ "$hi" != 0 ]; then echo "$2: note: the no-op maintenance run added $lo..$hi partitions per parent"; fi
}
# The registration calls for bench.tFROM..tTO, one statement each, into `stmts`.
partman_register() {  # FROM TO PREMAKE
    local i; stmts=()
    for ((i = $1; i <= $2; i++)); do
        stmts+=("SELECT partman.create_parent('bench.t$i', 'ts', 'native', 'daily', p_premake := $3,
                                               p_start_partition := date_trunc('day', now())::text)")
    done
}
ours_register() {  # FROM TO PREMAKE
    local i; stmts=()
    for ((i = $1; i <= $2; i++)); do
        stmts+=("SELECT count(*) FROM platform.partition_by_time('bench.t$i', 'ts', '1 day', premake => $3)")
    done
}
ours_set_premake() {  # N PREMAKE
    local i; stmts=()
    for ((i = 1; i <= $1; i++)); do stmts+=("SELECT platform.set_premake('bench.t$i', $2)"); done
}
partman_maintenance="SELECT partman.run_maintenance()"
# Over many parents run_maintenance() runs out of lock table on a default server (it reads
# max(ts) from partitions of every parent in one transaction: "out of shared memory,
# increase max_locks_per_transaction"); partman's answer is this procedure, which commits
# after each parent.
partman_maintenance_many="CALL partman.run_maintenance_proc()"
ours_maintenance="SELECT * FROM platform.run_maintenance()"

# Register the parents: today's partition and $premake ahead (and a default) each.
new_db $db_partman "$parents" "CREATE SCHEMA partman" "CREATE EXTENSION pg_partman SCHEMA partman"
new_db $db_ours "$parents" "CREATE EXTENSION pg_platform"
partman_register 1 "$parents" "$premake"
reg_theirs=$(timed $db_partman "${stmts[@]}")
ours_register 1 "$parents" "$premake"
reg_ours=$(timed $db_ours "${stmts[@]}")
check_counts $db_partman pg_partman "$parents" $((premake + 1))
check_counts $db_ours pg_platform "$parents" $((premake + 1))
# PostgreSQL's own floor for the same DDL: the same partitions (and a default) made by
# bare CREATE TABLE ... PARTITION OF statements, one transaction per parent.
db_floor=bench_partition_floor
new_db $db_floor "$parents"
stmts=()
for ((i = 1; i <= parents; i++)); do
    ddl="CREATE TABLE bench.t${i}_default PARTITION OF bench.t$i DEFAULT;"
    for ((k = 0; k <= premake; k++)); do
        ddl+=" CREATE TABLE bench.t${i}_$k PARTITION OF bench.t$i FOR VALUES
                 FROM (date_trunc('day', now()) + interval '$k days') TO (date_trunc('day', now()) + interval '$((k + 1)) days');"
    done
    stmts+=("$ddl")
done
reg_floor=$(timed $db_floor "${stmts[@]}")
check_counts $db_floor "bare CREATE TABLE" "$parents" $((premake + 1))
sql postgres "DROP DATABASE $db_floor" >/dev/null

# Maintenance after premake doubles: $premake new partitions per parent (not timed: the
# configuration change and the rows).
add_rows $db_partman "$parents"
add_rows $db_ours "$parents"
sql $db_partman "UPDATE partman.part_config SET premake = $premake2" >/dev/null
ours_set_premake "$parents" "$premake2"
sql $db_ours "${stmts[@]}" >/dev/null
snapshot $db_partman
snapshot $db_ours
maint_theirs=$(timed $db_partman "$partman_maintenance")
maint_ours=$(timed $db_ours "$ours_maintenance")
check_added $db_partman pg_partman "$premake"
check_added $db_ours pg_platform "$premake"

# Maintenance again: nothing to do.
snapshot $db_partman
snapshot $db_ours
noop_theirs=$(timed $db_partman "$partman_maintenance")
noop_ours=$(timed $db_ours "$ours_maintenance")
check_noop $db_partman pg_partman
check_noop $db_ours pg_platform

# Maintenance with nothing to do over $many parents ($many_premake ahead each): once
# untimed, then timed; pg_partman through run_maintenance_proc(), and only if registering
# the parents takes it less than $partman_setup_limit s ($chunk a session, checked between).
new_db $db_ours "$many" "CREATE EXTENSION pg_platform"
ours_register 1 "$many" "$many_premake"
echo "pg_platform: registering $many parents (premake $many_premake) took $(timed $db_ours "${stmts[@]}") s"
new_db $db_partman "$many" "CREATE SCHEMA partman" "CREATE EXTENSION pg_partman SCHEMA partman"
partman_many=yes
t0=$(date +%s.%N)
for ((i = 1; i <= many; i += chunk)); do
    partman_register "$i" $((i + chunk - 1 < many ? i + chunk - 1 : many)) "$many_premake"
    sql $db_partman "${stmts[@]}" >/dev/null
    if awk -v s="$(since "$t0")" -v l="$partman_setup_limit" 'BEGIN { exit !(s > l) }'; then
        partman_many=no
        echo "pg_partman: registering $many parents takes over $partman_setup_limit s (stopped after $((i + chunk - 1)) parents, $(since "$t0") s): not measured"
        break
    fi
done
if [ $partman_many = yes ]; then
    echo "pg_partman: registering $many parents (premake $many_premake) took $(since "$t0") s"
    add_rows $db_partman "$many"
fi
add_rows $db_ours "$many"
sql $db_ours "$ours_maintenance" >/dev/null
check_counts $db_ours pg_platform "$many" $((many_premake + 1))
snapshot $db_ours
many_ours=$(timed $db_ours "$ours_maintenance")
check_noop $db_ours pg_platform
many_theirs=-
if [ $partman_many = yes ]; then
    sql $db_partman "$partman_maintenance_many" >/dev/null
    check_counts $db_partman pg_partman "$many" $((many_premake + 1))
    snapshot $db_partman
    many_theirs=$(timed $db_partman "$partman_maintenance_many")
    check_noop $db_partman pg_partman
fi
sql postgres "DROP DATABASE $db_partman" "DROP DATABASE $db_ours" >/dev/null

result partition "register $parents parents, daily, premake $premake (s)" "$reg_ours" "pg_partman 4.7" "$reg_theirs" lower
result partition "register $parents parents, daily, premake $premake (s)" "$reg_ours" "bare CREATE TABLE ... PARTITION OF (DDL floor)" "$reg_floor" lower
result partition "maintenance adding $premake partitions per parent, $parents parents (s)" "$maint_ours" "pg_partman 4.7" "$maint_theirs" lower
result partition "no-op maintenance, $parents parents (s)" "$noop_ours" "pg_partman 4.7" "$noop_theirs" lower
if [ $partman_many = yes ]; then
    result partition "no-op maintenance, $many parents (s)" "$many_ours" "pg_partman 4.7 (run_maintenance_proc)" "$many_theirs" lower
else
    # "-" as their figure: run.sh prints n/a as the advantage.
    result partition "no-op maintenance, $many parents (s)" "$many_ours" "pg_partman 4.7 (not measured: set-up over ${partman_setup_limit} s)" - lower
fi
