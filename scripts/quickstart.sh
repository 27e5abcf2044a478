#!/usr/bin/env bash
# pg_platform quickstart: installs what is missing, builds and installs the extension,
# starts a throwaway PostgreSQL with it preloaded, runs the payments scenario end to end
# and prints what it did. The server is removed at the end unless KEEP=1 is set.
#   bash scripts/quickstart.sh                 (TRANSACTIONS=100000 by default)
#   KEEP=1 bash scripts/quickstart.sh          keep the server to explore it with psql
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
cd "$(dirname "$here")"

TRANSACTIONS=${TRANSACTIONS:-100000}
CUSTOMERS=${CUSTOMERS:-5000}
MERCHANTS=${MERCHANTS:-300}
dir=${QUICKSTART_DIR:-/tmp/pg_platform-quickstart}

phase "install" bash scripts/install.sh ${RELEASE:+--release}
stop_server "$dir"
port=$(free_port)
phase "start server" start_server "$dir" "$port" yes
if [ "${KEEP:-0}" != 1 ]; then
    trap 'stop_server "$dir"' EXIT
fi

# A throwaway master key for PII encryption, in a file only the server's user can read
# (a real installation keeps it on a secrets volume or fetches it with master_key_command).
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' | as_server_user tee "$dir/master.key" >/dev/null
as_server_user chmod 600 "$dir/master.key"
psql -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
     -c "ALTER SYSTEM SET platform.master_key_file = '$dir/master.key'" -c "SELECT pg_reload_conf()" >/dev/null

echo
echo "=============================== pg_platform quickstart ==============================="
psql -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
     -v transactions="$TRANSACTIONS" -v customers="$CUSTOMERS" -v merchants="$MERCHANTS" -v lake_dir="$dir/lake" \
     -f scripts/scenario.sql
echo "======================================================================================"
if [ "${KEEP:-0}" = 1 ]; then
    echo "server kept: psql -h $dir -p $port -U postgres"
    echo "stop it with: bash -c '. scripts/lib.sh; stop_server $dir'"
else
    echo "the throwaway server is stopped and $dir removed (KEEP=1 keeps it)"
fi
