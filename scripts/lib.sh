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
    as_server_user pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
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
