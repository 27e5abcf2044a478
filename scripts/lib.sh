# Shared shell functions for pg_platform's scripts (sourced, not run).
# shellcheck shell=bash

PG_MAJOR=${PG_MAJOR:-15}
PGRX_VERSION=0.18.0
export PATH="$HOME/.cargo/bin:/usr/lib/postgresql/$PG_MAJOR/bin:$PATH"

# phase NAME CMD...: runs a phase and prints how long it took.
phase() {
    local name=$1; shift
    local t0=$SECONDS
    echo "==> $name"
    "$@"
    local rc=$?
    echo "<== $name: $((SECONDS - t0))s (exit $rc)"
    return $rc
}

# as_root CMD...: root runs it directly, anyone else through sudo.
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# as_server_user CMD...: PostgreSQL refuses to run as root, so root runs it as postgres.
as_server_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# server_user: the OS user the throwaway servers run as.
server_user() {
    if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi
}

# has_output_plugin_libraries: whether this server has the output_plugin_libraries GUC
# (recent PostgreSQL 15 minors). Setting it on a server without it fails startup, and a
# server with it refuses plugins it does not list; the binary carries every GUC name.
has_output_plugin_libraries() {
    grep -q output_plugin_libraries "$(pg_config --bindir)/postgres"
}

# server_conf: the settings every throwaway server of ours runs with.
server_conf() {
    local port=$1 sockdir=$2 preload=${3:-yes}
    echo "port = $port"
    echo "listen_addresses = ''"
    echo "unix_socket_directories = '$sockdir'"
    echo "wal_level = logical"
    echo "max_replication_slots = 16"
    echo "max_wal_senders = 16"
    echo "fsync = on"
    # Sized like a small production server, not the 128MB default: bulk loads and
    # benchmarks measure the software, not checkpoint pressure.
    echo "shared_buffers = 1GB"
    echo "max_wal_size = 8GB"
    if [ "$preload" = yes ]; then
        # EXTRA_PRELOAD: libraries the benchmarks compare with (pgaudit).
        echo "shared_preload_libraries = 'pg_platform${EXTRA_PRELOAD:+, $EXTRA_PRELOAD}'"
        echo "platform.databases = 'postgres'"
    fi
    if has_output_plugin_libraries; then
        # wal2json and decoderbufs are allowed for the side-by-side CDC benchmark.
        echo "output_plugin_libraries = 'pgoutput, test_decoding, pg_platform, wal2json, decoderbufs'"
    fi
}

# start_server DIR PORT [preload]: initdb (if needed) and start a server in DIR.
start_server() {
    local dir=$1 port=$2 preload=${3:-yes}
    as_root mkdir -p "$dir"
    as_root chown "$(server_user)" "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_server_user initdb -D "$dir/data" -U postgres --auth=trust --no-instructions -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log"; return 1; }
    fi
    server_conf "$port" "$dir" "$preload" | as_server_user tee "$dir/data/postgresql.auto.conf" >/dev/null
    # Without the caller's RUST_BACKTRACE: if set, every ERROR raised through the extension's
    # Rust code would carry a backtrace in its DETAIL, unlike on a production server.
    as_server_user env -u RUST_BACKTRACE pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
        || { cat "$dir/server.log"; return 1; }
}

# stop_server DIR: stop the server and remove its directory.
stop_server() {
    local dir=$1
    [ -d "$dir" ] || return 0
    as_server_user pg_ctl -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    as_root rm -rf "$dir"
}

# free_port: a TCP port number nobody listens on (the servers use only a socket, but the
# port names the socket file, so it must not clash with another server's).
free_port() {
    local p
    for p in $(seq 54320 54420); do
        [ -e "/tmp/.s.PGSQL.$p" ] && continue
        ss -ltn 2>/dev/null | grep -q ":$p " && continue
        echo "$p"; return 0
    done
    echo 54399
}

# throwaway_server NAME [preload]: a fresh server in /tmp/pg_platform-NAME, stopped and
# removed when the script exits. Sets `dir` and `port` for the caller.
throwaway_server() {
    dir=/tmp/pg_platform-$1
    stop_server "$dir"
    port=$(free_port)
    start_server "$dir" "$port" "${2:-yes}"
    # shellcheck disable=SC2064
    trap "stop_server '$dir'" EXIT
}

# q PSQL-ARGS: psql on the throwaway server (dir, port) as postgres: quiet, unaligned,
# stopping at the first error.
q() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -At -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

# expect_error SQLSTATE SQL: the statement fails with that SQLSTATE; prints its ERROR line.
expect_error() {
    local out
    if out=$(PGOPTIONS='-c client_min_messages=warning' psql -X -q -At -h "$dir" -p "$port" -U postgres -d postgres \
            -v ON_ERROR_STOP=1 -c "\\set VERBOSITY verbose" -c "$2" 2>&1); then
        echo "expected SQLSTATE $1, the statement succeeded: $2"; exit 1
    fi
    echo "$out" | grep -q "ERROR:  $1:" || { echo "expected SQLSTATE $1 from: $2"; echo "$out"; exit 1; }
    echo "$out" | grep "ERROR:" | head -1
}

# start_moto PY BUCKET: an S3-compatible server (moto, from the lake venv PY) on a free
# 127.0.0.1 port with an empty BUCKET, for the S3 lake tests, and the throwaway server
# (dir, port) told where it is and how to sign (a shared credentials file in dir). Sets
# moto (its pid), s3_endpoint and s3_secret, and exports the keys for Python's clients.
start_moto() {
    local py=$1 bucket=$2 s3_port
    s3_port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$(dirname "$py")/moto_server" -H 127.0.0.1 -p "$s3_port" >"$dir/moto.log" 2>&1 &
    moto=$!
    s3_endpoint=http://127.0.0.1:$s3_port
    s3_secret="pgp-secret-$RANDOM$RANDOM$RANDOM"
    export AWS_ACCESS_KEY_ID=AKIDPGPLATFORMTEST AWS_SECRET_ACCESS_KEY=$s3_secret AWS_DEFAULT_REGION=us-east-1
    "$py" - "$s3_endpoint" "$bucket" <<'PY' || { cat "$dir/moto.log"; kill "$moto"; return 1; }
import sys, time, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
for _ in range(200):
    try:
        s3.create_bucket(Bucket=sys.argv[2])
        break
    except Exception:
        time.sleep(0.1)
else:
    sys.exit("moto does not start")
PY
    (umask 077; printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
        "$AWS_ACCESS_KEY_ID" "$s3_secret" >"$dir/aws_credentials")
    as_root chown "$(server_user)" "$dir/aws_credentials"
    PGOPTIONS='-c client_min_messages=warning' psql -X -q -At -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "ALTER SYSTEM SET platform.lake_s3_endpoint = '$s3_endpoint'" \
        -c "ALTER SYSTEM SET platform.lake_s3_credentials_file = '$dir/aws_credentials'" \
        -c "SELECT pg_reload_conf()" >/dev/null
}

# lake_python: a Python with DuckDB, pyarrow and moto (tests/e2e/lake/requirements.txt), in a
# venv made on first use. Prints the interpreter's path.
lake_python() {
    local venv=${LAKE_VENV:-/tmp/pg_platform-lake-venv}
    local req
    req=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/e2e/lake/requirements.txt
    if ! "$venv/bin/python" -c 'import duckdb, pyarrow, pytz, psycopg2, moto, boto3, flask' 2>/dev/null; then
        python3 -m venv "$venv" >&2 || return 1
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2 || return 1
    fi
    echo "$venv/bin/python"
}
