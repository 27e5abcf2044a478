#!/usr/bin/env bash
# Wrong S3 credentials, against an S3 server that checks them (moto behind a SigV4
# check of each request's signature, tests/e2e/lake/s3_auth_server.py, on 127.0.0.1): an
# unknown key id and a wrong secret key are each a clear 42501 naming the object, at sink
# creation (no sink, no slot left) and for a batch (the slot stays where it was); the
# worker reports the failure in lake_status and lands everything once, by itself, when
# the credentials file is right again. Neither secret appears in any message or log.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
py=$(lake_python) || { echo "cannot make the Python venv with pyarrow and moto"; exit 1; }
throwaway_server e2e-lake-s3-auth yes

s3_port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint=http://127.0.0.1:$s3_port
key_id=AKIDPGPLATFORMAUTH
secret="pgp-right-$RANDOM$RANDOM$RANDOM"
wrong="pgp-wrong-$RANDOM$RANDOM$RANDOM"
"$py" "$root/tests/e2e/lake/s3_auth_server.py" "$s3_port" "$key_id" "$secret" >"$dir/s3.log" 2>&1 &
s3=$!
trap 'kill $s3 2>/dev/null || true; stop_server "$dir"' EXIT
export AWS_ACCESS_KEY_ID=$key_id AWS_SECRET_ACCESS_KEY=$secret AWS_DEFAULT_REGION=us-east-1
"$py" - "$endpoint" <<'PY' || { cat "$dir/s3.log"; exit 1; }
import sys, time, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
for _ in range(200):
    try:
        s3.create_bucket(Bucket="lake-auth")
        break
    except Exception:
        time.sleep(0.1)
else:
    sys.exit("the S3 server does not start")
PY
# credentials KEY_ID SECRET: the shared credentials file the server signs with.
credentials() {
    (umask 077; printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$1" "$2" >"$dir/aws_credentials")
    as_root chown "$(server_user)" "$dir/aws_credentials"
}
credentials "$key_id" "$wrong"
q -c "ALTER SYSTEM SET platform.lake_s3_endpoint = '$endpoint'" \
  -c "ALTER SYSTEM SET platform.lake_s3_credentials_file = '$dir/aws_credentials'" \
  -c "ALTER SYSTEM SET platform.lake_s3_timeout = 5" -c "SELECT pg_reload_conf()" >/dev/null
q -c "CREATE EXTENSION pg_platform" >/dev/null
q -c "CREATE TABLE public.acct (id int PRIMARY KEY, amount numeric(12,2))" \
  -c "INSERT INTO public.acct SELECT g, g FROM generate_series(1, 20) g" >/dev/null

# At creation: a wrong secret, then an unknown key id; nothing is left behind.
expect_error 42501 "SELECT * FROM platform.create_lake_sink('auth', 's3://lake-auth/raw', tables => 'public.acct', background => false)" \
    | tee "$dir/errors.txt" | grep -q "SignatureDoesNotMatch" || { echo "a wrong secret is not reported as such"; cat "$dir/errors.txt"; exit 1; }
credentials AKIDNOSUCHKEY "$secret"
expect_error 42501 "SELECT * FROM platform.create_lake_sink('auth', 's3://lake-auth/raw', tables => 'public.acct', background => false)" \
    | tee -a "$dir/errors.txt" | grep -q "InvalidAccessKeyId" || { echo "an unknown key id is not reported as such"; cat "$dir/errors.txt"; exit 1; }
[ "$(q -c "SELECT count(*) FROM platform.lake_sink")" = 0 ] || { echo "a refused sink was left behind"; exit 1; }
[ "$(q -c "SELECT count(*) FROM pg_replication_slots")" = 0 ] || { echo "a refused sink left its slot"; exit 1; }

# The right credentials: the sink is made and lands its backfill.
credentials "$key_id" "$secret"
q -c "SELECT * FROM platform.create_lake_sink('auth', 's3://lake-auth/raw', tables => 'public.acct', background => false)" >/dev/null
for _ in $(seq 1 10); do
    [ "$(q -c "SELECT rows FROM platform.lake_sync('auth')")" = 0 ] && [ "$(q -c "SELECT state FROM platform.lake_backfills WHERE sink = 'auth'")" = done ] && break
done

# A batch with a wrong secret: refused, the slot stays.
credentials "$key_id" "$wrong"
slot=$(q -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_auth'")
q -c "INSERT INTO public.acct SELECT g, g FROM generate_series(21, 30) g" >/dev/null
expect_error 42501 "SELECT rows FROM platform.lake_sync('auth')" | tee -a "$dir/errors.txt" \
    | grep -q "s3://lake-auth/raw/public/acct/.*HTTP 403 SignatureDoesNotMatch" || { echo "the batch's refusal does not name the object"; cat "$dir/errors.txt"; exit 1; }
[ "$(q -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_platform_lake_auth'")" = "$slot" ] \
    || { echo "the slot moved past a batch the bucket refused"; exit 1; }

# The worker with the wrong secret: the failure is in lake_status; with the right one
# again it lands by itself.
q -c "UPDATE platform.lake_sink SET background = true WHERE name = 'auth'" >/dev/null
for _ in $(seq 1 150); do
    [ -n "$(q -c "SELECT last_error FROM platform.lake_status WHERE sink = 'auth' AND last_error LIKE '%SignatureDoesNotMatch%(42501)'")" ] && break
    sleep 0.2
done
q -c "SELECT last_error FROM platform.lake_status WHERE sink = 'auth'" | tee "$dir/status.txt" | grep -q "(42501)$" \
    || { echo "the worker's refusal is not in lake_status:"; cat "$dir/status.txt"; exit 1; }
credentials "$key_id" "$secret"
for _ in $(seq 1 150); do
    [ "$(q -c "SELECT last_error IS NULL AND confirmed_flush_lsn > '$slot' FROM platform.lake_status WHERE sink = 'auth'")" = t ] && break
    sleep 0.2
done
[ "$(q -c "SELECT last_error IS NULL FROM platform.lake_status WHERE sink = 'auth'")" = t ] \
    || { echo "the worker did not resume with the right credentials"; q -c "SELECT * FROM platform.lake_status"; exit 1; }
q -c "UPDATE platform.lake_sink SET background = false WHERE name = 'auth'" >/dev/null
sleep 1
for _ in $(seq 1 10); do [ "$(q -c "SELECT rows FROM platform.lake_sync('auth')")" = 0 ] && break; done

# Every row once in the bucket: 20 from the backfill, 10 changes.
"$py" - "$endpoint" <<'PY'
import collections, sys
import boto3, pyarrow.dataset as ds, pyarrow.fs as pafs
endpoint = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lake-auth", Prefix="raw/public/acct/").get("Contents", []) if o["Key"].endswith(".parquet")]
fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1")
rows = ds.dataset(["lake-auth/" + k for k in keys], filesystem=fs, format="parquet").to_table().to_pylist()
got = collections.Counter((r["_op"], r["id"]) for r in rows)
want = collections.Counter([("r", i) for i in range(1, 21)] + [("i", i) for i in range(21, 31)])
if got != want:
    sys.exit(f"the bucket holds {sorted((got - want).elements())[:5]} too many, {sorted((want - got).elements())[:5]} missing")
print(f"lake s3 auth: {len(rows)} changes once in {len(keys)} objects after the credentials were mended")
PY
if grep -qF -e "$secret" -e "$wrong" "$dir/server.log" "$dir/errors.txt" "$dir/status.txt" "$dir"/data/log/* 2>/dev/null; then
    echo "an S3 secret key appears in the server's messages"; exit 1
fi
q -c "SELECT platform.drop_lake_sink('auth')" >/dev/null
echo "S3 lake: an unknown key id and a wrong secret refused with 42501 (no sink, slot kept), the worker resumed by itself once the credentials were right"
