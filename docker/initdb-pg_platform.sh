#!/usr/bin/env bash
# Runs once when the official image initialises a new data directory.
set -euo pipefail
# Recent PostgreSQL 15 minors only accept output plugins listed in output_plugin_libraries.
if grep -q output_plugin_libraries "$(pg_config --bindir)/postgres"; then
    echo "output_plugin_libraries = 'pgoutput, test_decoding, pg_platform'" >> "$PGDATA/postgresql.auto.conf"
fi
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
     -c "CREATE EXTENSION IF NOT EXISTS pg_platform"
