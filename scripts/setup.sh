#!/usr/bin/env bash
# Installs what building and testing pg_platform needs on Debian bookworm, idempotently:
# PostgreSQL 15 with its server headers, clang for bindgen, sudo (pgrx tests run the server
# as another user), cargo-pgrx 0.18.0 and its configuration. Works as root or as a user with sudo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

apt_packages=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libclang-dev clang sudo pkg-config make gcc iproute2 procps bsdextrautils python3 python3-venv
              postgresql-$PG_MAJOR-wal2json postgresql-$PG_MAJOR-decoderbufs postgresql-$PG_MAJOR-partman
              postgresql-$PG_MAJOR-pgaudit)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's package starts a cluster on 5432; ours use their own data directories.

if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust 1.95 (rustup) first" >&2
    exit 1
fi
if [ "$(cargo pgrx --version 2>/dev/null | awk '{print $2}')" != "$PGRX_VERSION" ]; then
    echo "installing cargo-pgrx $PGRX_VERSION"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi
pg_config_path=$(command -v pg_config)
if ! grep -qs "pg$PG_MAJOR = \"$pg_config_path\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    cargo pgrx init --pg$PG_MAJOR "$pg_config_path" >/dev/null
fi
echo "setup ok: $(pg_config --version), $(cargo pgrx --version), $(rustc --version)"
