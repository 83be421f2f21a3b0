#!/usr/bin/env bash
# Installs what is missing, builds biomatch (release), and starts the whole cluster in one process
# on embedded storage (SQLite files under BIOMATCH_DATA_DIR, default ./biomatch-data).
# gRPC on 127.0.0.1:50051, REST on 127.0.0.1:8080. Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/biomatch/target}"
cargo build --release --locked -p biomatch
bash scripts/fetch-models.sh models
echo "start: cluster starting; in another shell try: $CARGO_TARGET_DIR/release/biomatch gallery list"
exec "$CARGO_TARGET_DIR/release/biomatch" serve --role all --data-dir "${BIOMATCH_DATA_DIR:-./biomatch-data}" \
    --model-dir models "$@"
