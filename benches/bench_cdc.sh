# CDC decode throughput: the pg_platform plugin (json and binary formats) against pgoutput, test_decoding, wal2json
# (format 1 and 2) and decoderbufs on one workload on the reference transaction table
# (inserts in 1k-row transactions, then updates, then deletes). Every plugin has its own
# slot, created before the workload, and is drained once; reported as changes/s and
# bytes/change.
if [ "$SMOKE" = 1 ]; then inserts=2000; updates=200; deletes=100; else inserts=200000; updates=20000; deletes=10000; fi
changes=$((inserts + updates + deletes))
db=bench_cdc
sql postgres "DROP DATABASE IF EXISTS $db" "CREATE DATABASE $db" >/dev/null
sql $db "CREATE EXTENSION pg_platform" "SELECT platform.create_payments_schema('cdc')" \
        "SELECT count(*) FROM platform.generate_payments('cdc', 2000, 100, 0)" \
        "CREATE PUBLICATION bench_pub FOR TABLE cdc.transaction" >/dev/null
plugins=(pg_platform pg_platform_binary pgoutput test_decoding wal2json1 wal2json2 decoderbufs)
plugin_of() { case "$1" in wal2json1|wal2json2) echo wal2json ;; pg_platform_binary) echo pg_platform ;; *) echo "$1" ;; esac; }
for p in "${plugins[@]}"; do
    sql $db "SELECT pg_create_logical_replication_slot('bench_$p', '$(plugin_of "$p")')" >/dev/null
done
# Drained first and not reported: brings the WAL into the page cache for every plugin.
sql $db "SELECT pg_create_logical_replication_slot('bench_warmup', 'test_decoding')" >/dev/null
sql $db "DO \$\$ BEGIN
           FOR i IN 0..$((inserts / 1000 - 1)) LOOP
             INSERT INTO cdc.transaction (id, occurred_at, customer_id, merchant_id, payment_method_id, device_id,
                                          location_id, ip_address, amount, currency, status_id)
             SELECT id, occurred_at, customer_id, merchant_id, payment_method_id, device_id, location_id,
                    ip_address::inet, amount::numeric(18,2), currency, status_id
               FROM platform.generate_transaction_rows(i * 1000 + 1, 1000, $inserts, 42, 2000, 100, '2026-01-01', 90);
             COMMIT;
           END LOOP;
           FOR i IN 0..$((updates / 1000 - 1 < 0 ? 0 : updates / 1000 - 1)) LOOP
             UPDATE cdc.transaction SET status_id = 4, fraud_score = 0.5
              WHERE id > i * 1000 AND id <= least((i + 1) * 1000, $updates);
             COMMIT;
           END LOOP;
           DELETE FROM cdc.transaction WHERE id > $((inserts - deletes));
         END \$\$" >/dev/null

drain() {  # slot, SQL function, options -> prints "seconds bytes"
    local t0 t1 bytes
    t0=$(date +%s.%N)
    bytes=$(sql $db "SELECT coalesce(sum(octet_length(data)), 0) FROM $2('$1', NULL, NULL $3)")
    t1=$(date +%s.%N)
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') $bytes"
}
drain bench_warmup pg_logical_slot_get_changes "" >/dev/null
sql $db "SELECT pg_drop_replication_slot('bench_warmup')" >/dev/null
declare -A secs bytes
for p in "${plugins[@]}"; do
    case "$p" in
        pg_platform) r=$(drain bench_$p pg_logical_slot_get_changes "") ;;
        pg_platform_binary) r=$(drain bench_$p pg_logical_slot_get_binary_changes ", 'format', 'binary'") ;;
        pgoutput) r=$(drain bench_$p pg_logical_slot_get_binary_changes ", 'proto_version', '1', 'publication_names', 'bench_pub'") ;;
        test_decoding) r=$(drain bench_$p pg_logical_slot_get_changes ", 'skip-empty-xacts', '1'") ;;
        wal2json1) r=$(drain bench_$p pg_logical_slot_get_changes ", 'format-version', '1'") ;;
        wal2json2) r=$(drain bench_$p pg_logical_slot_get_changes ", 'format-version', '2'") ;;
        decoderbufs) r=$(drain bench_$p pg_logical_slot_get_binary_changes "") ;;
    esac
    secs[$p]=${r% *}; bytes[$p]=${r#* }
done
rate() { awk -v n="$changes" -v s="${secs[$1]}" 'BEGIN { printf "%d", n / s }'; }
per() { awk -v n="$changes" -v b="${bytes[$1]}" 'BEGIN { printf "%.1f", b / n }'; }
for ours in pg_platform pg_platform_binary; do
    format=json; [ "$ours" = pg_platform_binary ] && format=binary
    for p in pgoutput test_decoding wal2json1 wal2json2 decoderbufs; do
        result "CDC decode, $format ($changes changes)" "changes/s" "$(rate $ours)" "$p" "$(rate "$p")" higher
    done
    for p in pgoutput test_decoding wal2json1 wal2json2 decoderbufs; do
        result "CDC output size, $format" "bytes/change" "$(per $ours)" "$p" "$(per "$p")" lower
    done
done
for p in "${plugins[@]}"; do sql $db "SELECT pg_drop_replication_slot('bench_$p')" >/dev/null; done
sql postgres "DROP DATABASE $db" >/dev/null
