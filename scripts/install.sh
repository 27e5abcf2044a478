#!/usr/bin/env bash
# Builds pg_platform and installs it into the PostgreSQL that pg_config names.
# Used by the quickstart, the end-to-end tests, the benchmarks and docker/Dockerfile alike.
#   bash scripts/install.sh            debug build (fast to compile)
#   bash scripts/install.sh --release  optimised build (benchmarks, production images)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
cd "$(dirname "$here")"

bash scripts/setup.sh
args=(--pg-config "$(command -v pg_config)")
[ "${1:-}" = --release ] && args+=(--release)
# The extension directories belong to root; pgrx copies into them with sudo when needed.
[ "$(id -u)" = 0 ] || args+=(--sudo)
cargo pgrx install "${args[@]}" 2>&1 | grep -Ev '^\s+(Compiling|Checking|Downloaded|Downloading)' || {
    echo "cargo pgrx install failed" >&2
    exit 1
}
echo "installed pg_platform into $(pg_config --pkglibdir)"
