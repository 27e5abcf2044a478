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
q -c "CREATE ROLE e2e_dev LOGIN IN ROLE platform_developer" >/dev/null
out=$(psql -X -At -h "$dir" -p "$port" -U e2e_dev -d postgres -c "SHOW platform.master_key_file" 2>&1 || true)
echo "$out" | grep -q "permission denied\|must be superuser" || { echo "a non-superuser can read the key file setting: $out"; exit 1; }
# A different master key cannot unwrap the data keys, and says so.
other=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
printf '%s\n' "$other" | as_server_user tee "$keyfile" >/dev/null
fails_with F0000 "SELECT platform.encrypt('x', 'k', 'e')"
printf '%s\n' "$key" | as_server_user tee "$keyfile" >/dev/null
# Secrets in the log or the dump: the master key never; wrapped keys only in the dump.
if grep -qi "$key" "$dir/server.log"; then echo "the master key is in the server log"; exit 1; fi
as_server_user pg_dump -h "$dir" -p "$port" -U postgres -f "$dir/dump.sql" postgres
if grep -qi "$key" "$dir/dump.sql"; then echo "the master key is in the dump"; exit 1; fi
grep -q "pii_key_version" "$dir/dump.sql" || { echo "the dump lacks the wrapped keys"; exit 1; }
echo "master key: refused when missing, exposed, foreign or malformed; never in the log or the dump"
