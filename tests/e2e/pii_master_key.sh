#!/usr/bin/env bash
# The master key of PII encryption: refused when missing, when its file is readable by
# others or owned by another user, or malformed; accepted from a 0600 file of the server's
# user; never visible to non-superusers; and neither it nor a data key reaches the server
# log, even with log_statement = 'all'. A dump holds only wrapped keys.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
throwaway_server e2e-pii yes
q() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -At -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -v VERBOSITY=verbose "$@"; }
fails_with() {  # STATE SQL: the statement fails with that SQLSTATE
    local out
    out=$(q -c "$2" 2>&1) && { echo "expected $1 from: $2"; exit 1; }
    echo "$out" | grep -q "ERROR:  $1:" || { echo "expected $1 from: $2, got: $out"; exit 1; }
}
set_key_file() {
    q -c "ALTER SYSTEM SET platform.master_key_file = '$1'" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 0.3
}
key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
keyfile="$dir/master.key"
q -c "ALTER SYSTEM SET log_statement = 'all'" -c "SELECT pg_reload_conf()" >/dev/null
q -c "CREATE EXTENSION pg_platform"
fails_with 55000 "SELECT platform.create_key('k')"                     # no master key configured
q -c "ALTER SYSTEM SET platform.master_key_command = 'exit 3'" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3
fails_with F0000 "SELECT platform.create_key('k')"                     # the command fails
q -c "ALTER SYSTEM SET platform.master_key_command = 'echo 1234'" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3
fails_with F0000 "SELECT platform.create_key('k')"                     # the command prints no key
set_key_file "$dir/elsewhere.key"
fails_with F0000 "SELECT platform.create_key('k')"                     # both settings at once
q -c "ALTER SYSTEM RESET platform.master_key_command" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3
printf '%s\n' "$key" | as_server_user tee "$keyfile" >/dev/null
as_server_user chmod 644 "$keyfile"
set_key_file "$keyfile"
fails_with F0000 "SELECT platform.create_key('k')"                     # readable by others
as_root chown root "$keyfile"; as_root chmod 600 "$keyfile"
fails_with F0000 "SELECT platform.create_key('k')"                     # not the server's user
as_root chown "$(server_user)" "$keyfile"
echo "not a key" | as_server_user tee "$keyfile" >/dev/null
fails_with F0000 "SELECT platform.create_key('k')"                     # malformed
set_key_file "$dir/missing.key"
fails_with F0000 "SELECT platform.create_key('k')"                     # missing
printf '%s\n' "$key" | as_server_user tee "$keyfile" >/dev/null
set_key_file "$keyfile"
[ "$(q -c "SELECT platform.create_key('k')")" = 1 ] || { echo "create_key failed with a good key file"; exit 1; }
[ "$(q -c "SELECT platform.decrypt(platform.encrypt('carol@example.com', 'k', 'e'), 'e')")" = carol@example.com ] \
    || { echo "round trip failed"; exit 1; }
q -c "SELECT platform.rotate_key('k')" -c "SELECT platform.encrypt_for_subject('x', 'k', 'cust-1', 'c')" \
  -c "SELECT platform.forget_subject('k', 'cust-1')" >/dev/null
# The protect / write / search / rotate / forget flow, logged with log_statement = 'all'
# and the per-statement read log on. An application sends values as bind parameters (keep
# them out of the log with log_parameter_max_length = 0); here they are built in the
# server from base64, so that the statement text holds no plaintext and any plaintext in
# the log could only come from pg_platform: its triggers, errors or read log.
secret='dave.secret@example.com'
value="convert_from(decode('$(printf %s "$secret" | base64)', 'base64'), 'UTF8')"
q -c "ALTER SYSTEM SET platform.pii_access_log = on" -c "SELECT pg_reload_conf()" >/dev/null
q -c "CREATE TABLE public.person (id int PRIMARY KEY, customer text NOT NULL, email text NOT NULL)" \
  -c "INSERT INTO public.person SELECT i, 'c' || (i % 3), 'seed' || i || '@example.org' FROM generate_series(1, 40) i" >/dev/null
q -c "CALL platform.protect_column('public.person', 'email', 'k', subject_column => 'customer', mask => 'email',
                                   blind_index => true, batch_size => 7)"
q -c "INSERT INTO public.person_view VALUES (100, 'c1', $value)" >/dev/null
fails_with 23505 "INSERT INTO public.person_view VALUES (100, 'c1', $value)"   # duplicate key
fails_with 23502 "INSERT INTO public.person_view VALUES (101, NULL, $value)"   # no subject
q -c "UPDATE public.person_view SET email = $value WHERE id = 1" >/dev/null
[ "$(q -c "SELECT count(*) FROM public.person_view WHERE email = $value")" = 2 ] \
    || { echo "the protected view does not find the written values"; exit 1; }
q -c "SELECT platform.rotate_key('k')" -c "CALL platform.reencrypt('public.person', 'email_encrypted', NULL, 10)" >/dev/null
q -c "SELECT platform.forget_subject('k', 'c2')" >/dev/null
[ "$(q -c "SET platform.pii_forgotten_read = 'null'" -c "SELECT count(*) FROM public.person_view WHERE email IS NULL")" = 13 ] \
    || { echo "forgetting subject c2 did not make exactly its 13 values unreadable"; exit 1; }
fails_with P0002 "SELECT email FROM public.person_view WHERE customer = 'c2'"
if grep -qF "$secret" "$dir/server.log"; then echo "plaintext written through the view is in the server log"; exit 1; fi
if grep -qE 'seed[0-9]+@example\.org' "$dir/server.log"; then echo "protected plaintext is in the server log"; exit 1; fi
grep -q 'role postgres was shown [0-9]* value(s) of protected column public.person."email"' "$dir/server.log" \
    || { echo "the per-statement read log line is missing:"; grep -i "shown\|pg_platform" "$dir/server.log" | tail -n 5; exit 1; }
q -c "CREATE ROLE e2e_dev LOGIN IN ROLE platform_developer" >/dev/null
out=$(psql -X -At -h "$dir" -p "$port" -U e2e_dev -d postgres -c "SHOW platform.master_key_file" 2>&1 || true)
echo "$out" | grep -q "permission denied\|must be superuser" || { echo "a non-superuser can read the key file setting: $out"; exit 1; }
# A different master key cannot unwrap the data keys, and says so.
other=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
printf '%s\n' "$other" | as_server_user tee "$keyfile" >/dev/null
fails_with F0000 "SELECT platform.encrypt('x', 'k', 'e')"
printf '%s\n' "$key" | as_server_user tee "$keyfile" >/dev/null
# Master key rotation: a new key file, the old key named as the previous one, every data
# key rewrapped in one call; afterwards only the new key is needed, and nothing was re-encrypted.
newkey=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
newfile="$dir/master-2.key"
printf '%s\n' "$newkey" | as_server_user tee "$newfile" >/dev/null
as_server_user chmod 600 "$newfile"
set_key_file "$newfile"
fails_with F0000 "SELECT email FROM public.person_view WHERE id = 1"     # keys still wrapped by the old key
fails_with F0000 "SELECT platform.rewrap_keys()"                          # the old key is not named yet
q -c "ALTER SYSTEM SET platform.previous_master_key_file = '$keyfile'" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3
rewrapped=$(q -c "SELECT platform.rewrap_keys()")
[ "$rewrapped" -ge 4 ] || { echo "rewrap_keys rewrapped $rewrapped keys"; exit 1; }
[ "$(q -c "SELECT platform.rewrap_keys()")" = 0 ] || { echo "a second rewrap_keys found keys to rewrap"; exit 1; }
q -c "ALTER SYSTEM RESET platform.previous_master_key_file" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3
[ "$(q -c "SELECT count(*) FROM public.person_view WHERE email = $value")" = 2 ] \
    || { echo "values are not readable with the new master key alone"; exit 1; }
if grep -qi "$newkey" "$dir/server.log"; then echo "the new master key is in the server log"; exit 1; fi
# Secrets in the log or the dump: the master key never; wrapped keys only in the dump.
if grep -qi "$key" "$dir/server.log"; then echo "the master key is in the server log"; exit 1; fi
as_server_user pg_dump -h "$dir" -p "$port" -U postgres -f "$dir/dump.sql" postgres
if grep -qi "$key" "$dir/dump.sql"; then echo "the master key is in the dump"; exit 1; fi
grep -q "pii_key_version" "$dir/dump.sql" || { echo "the dump lacks the wrapped keys"; exit 1; }
if grep -qF "$secret" "$dir/dump.sql" || grep -qE 'seed[0-9]+@example\.org' "$dir/dump.sql"; then
    echo "protected plaintext is in the dump"; exit 1
fi
grep -q "protected_columns" "$dir/dump.sql" || { echo "the dump lacks the protected column registry"; exit 1; }
echo "master key: refused when missing, exposed, foreign or malformed; it, and plaintext written through a protected view, never in the log or the dump"
