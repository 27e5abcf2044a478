# PII encryption against pgcrypto, same rows, same server, one run: encrypted inserts
# (platform.encrypt vs pgp_sym_encrypt with a passphrase in the SQL text, which is what
# pgcrypto users do), decryption, per-subject keys against one key, and the plaintext
# insert as the ceiling. Each figure is rows per second of one INSERT ... SELECT or one
# SELECT over the table, timed inside the server.
# shellcheck shell=bash
if [ "$SMOKE" = 1 ]; then rows=2000; else rows=100000; fi
db=bench_pii
sql postgres "DROP DATABASE IF EXISTS $db" "CREATE DATABASE $db" >/dev/null
# A throwaway master key for this run (never a real one in a script).
kek=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
sql postgres "ALTER SYSTEM SET platform.master_key_command = 'echo $kek'" "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
sql $db "CREATE EXTENSION pg_platform" "CREATE EXTENSION pgcrypto" "SELECT platform.create_key('bench')" >/dev/null
# rate SQL [WARMUP]: rows per second of one statement, after WARMUP (untimed) in the same
# session, as a pooled application connection would be.
rate() {
    sql $db "DO \$\$ DECLARE t timestamptz; n bigint; BEGIN
               EXECUTE \$w\$${2:-SELECT 1}\$w\$;
               t := clock_timestamp();
               EXECUTE \$q\$$1\$q\$; GET DIAGNOSTICS n = ROW_COUNT;
               IF n <= 1 THEN n := $rows; END IF;  -- a SELECT count(...) reports one row
               PERFORM set_config('bench.rate', round(n / extract(epoch FROM clock_timestamp() - t))::text, false);
             END \$\$" "SELECT current_setting('bench.rate')" | tail -1
}
emails="SELECT g, 'customer' || g || '@example.com' AS v FROM generate_series(1, $rows) g"
sql $db "CREATE TABLE plain (id int, v text)" "CREATE TABLE ours (id int, v bytea)" \
        "CREATE TABLE subj (id int, v bytea)" "CREATE TABLE theirs (id int, v bytea)" >/dev/null
# Warm up both (key caches, pgcrypto's library) on a few rows, untimed.
sql $db "SELECT platform.encrypt('x', 'bench', 'warm'), pgp_sym_encrypt('x', 'warm-up passphrase')" >/dev/null
plain=$(rate "INSERT INTO plain SELECT g, v FROM ($emails) s")
ours=$(rate "INSERT INTO ours SELECT g, platform.encrypt(v, 'bench', 'customer.email') FROM ($emails) s" "SELECT platform.encrypt('w', 'bench', 'w')")
subject_insert="INSERT INTO subj SELECT g, platform.encrypt_for_subject(v, 'bench', (g % 1000)::text, 'customer.email') FROM ($emails) s"
subj_new=$(rate "$subject_insert")   # the first value of each subject makes its key
subj=$(rate "$subject_insert" "SELECT count(platform.encrypt_for_subject('w', 'bench', g::text, 'w')) FROM generate_series(0, 999) g")
theirs=$(rate "INSERT INTO theirs SELECT g, pgp_sym_encrypt(v, 'a passphrase in the SQL text') FROM ($emails) s" "SELECT pgp_sym_encrypt('w', 'w')")
# Transparent protection: the application inserts plaintext into the generated view, whose
# trigger encrypts (with a blind index); a reader selects plaintext back through it.
sql $db "CREATE TABLE protected (id int PRIMARY KEY, email text)" >/dev/null
sql $db "CALL platform.protect_column('protected', 'email', 'bench', mask => 'email', blind_index => true)" >/dev/null
view_insert=$(rate "INSERT INTO protected_view SELECT g, v FROM ($emails) s" "SELECT platform.blind_index('w', 'bench')")
view_read=$(rate "SELECT count(email) FROM protected_view")
dec_ours=$(rate "SELECT count(platform.decrypt(v, 'customer.email')) FROM ours")
dec_theirs=$(rate "SELECT count(pgp_sym_decrypt(v, 'a passphrase in the SQL text')) FROM theirs")
[ "$(sql $db "SELECT count(*) FROM ours WHERE platform.decrypt(v, 'customer.email') = 'customer' || id || '@example.com'")" = "$rows" ] \
    || { echo "bench pii: decrypted values differ" >&2; exit 1; }
sql postgres "DROP DATABASE $db" "ALTER SYSTEM RESET platform.master_key_command" "SELECT pg_reload_conf()" >/dev/null
result "PII" "encrypted insert, $rows rows (rows/s)" "$ours" "pgcrypto pgp_sym_encrypt" "$theirs" higher
result "PII" "decrypt, $rows rows (rows/s)" "$dec_ours" "pgcrypto pgp_sym_decrypt" "$dec_theirs" higher
result "PII" "encrypted insert, $rows rows (rows/s)" "$ours" "plaintext insert (the ceiling)" "$plain" higher
result "PII" "insert through a protected view, blind index, $rows rows (rows/s)" "$view_insert" "pgcrypto pgp_sym_encrypt" "$theirs" higher
result "PII" "read through a protected view, $rows rows (rows/s)" "$view_read" "pgcrypto pgp_sym_decrypt" "$dec_theirs" higher
result "PII" "per-subject keys, 1000 subjects, keys cached (rows/s)" "$subj" "one key (platform.encrypt)" "$ours" higher
result "PII" "per-subject keys, 1000 made during the insert (rows/s)" "$subj_new" "one key (platform.encrypt)" "$ours" higher
