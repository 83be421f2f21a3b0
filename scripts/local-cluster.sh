#!/usr/bin/env bash
# A local cluster of separate processes on loopback, the topology of a small deployment:
#   1 audit, 1 ingest (+embed), 4 matchers holding gallery $GALLERY as 2 shards x 2 replicas,
#   1 search (+ REST gateway on :8080).
# Usage: scripts/local-cluster.sh [start|stop]   (state, keys and logs in $BIOMATCH_CLUSTER_DIR)
# Then create the gallery with 2 shards, e.g.:
#   export BIOMATCH_TOKEN=$(cat $BIOMATCH_CLUSTER_DIR/admin.token)
#   biomatch gallery create travelers --dim 512 --shards 2 --purposes border --retention 12h \
#       --endpoint http://127.0.0.1:50062
# and search through http://127.0.0.1:50051 (gRPC) or http://127.0.0.1:8080 (REST).
# Matchers load the gallery's shards when it is created; kill one replica and searches go on.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${BIOMATCH_CLUSTER_DIR:-$PWD/biomatch-cluster}"
GALLERY="${GALLERY:-travelers}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/biomatch/target}"
BIN="$CARGO_TARGET_DIR/release/biomatch"

stop() {
    [ -f "$DIR/pids" ] || return 0
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$DIR/pids"
    rm -f "$DIR/pids"
    echo "local cluster stopped"
}

case "${1:-start}" in
    stop) stop; exit 0 ;;
    start) ;;
    *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac

stop
[ -x "$BIN" ] || cargo build --release -p biomatch
mkdir -p "$DIR/keys" "$DIR/logs"
# One key per identity: the operator's issuer signs people's tokens (no process holds it); each
# process signs its calls with its own key, `service-ROLES`, which can sign nothing else.
KIDS=(ops service-audit service-ingest+embed service-matcher service-search+gateway)
for kid in "${KIDS[@]}"; do
    [ -f "$DIR/keys/$kid.key.pem" ] || "$BIN" token keygen --kid "$kid" --out "$DIR/keys" >/dev/null
done
[ -f "$DIR/keys/master.key" ] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/keys/master.key")
PUBLIC=$(for kid in "${KIDS[@]}"; do printf '%s,' "$DIR/keys/$kid.pub.pem"; done)
KEYS=(--public-keys "${PUBLIC%,}" --master-key-file "$DIR/keys/master.key" --data-dir "$DIR/data")

# Starts `biomatch serve NAME SERVICE_KID ARGS...` in the background and waits until it listens.
start() {
    local name=$1 kid=$2; shift 2
    "$BIN" serve "$@" "${KEYS[@]}" --service-key "$DIR/keys/$kid.key.pem" > "$DIR/logs/$name.log" 2>&1 &
    echo $! >> "$DIR/pids"
    for _ in $(seq 1 300); do
        grep -q "grpc listening" "$DIR/logs/$name.log" && return 0
        kill -0 "$!" 2>/dev/null || { echo "$name failed:"; tail -5 "$DIR/logs/$name.log"; stop; exit 1; }
        sleep 0.2
    done
    echo "$name did not start; see $DIR/logs/$name.log"; stop; exit 1
}

start audit service-audit --role audit --grpc-addr 127.0.0.1:50061
start ingest service-ingest+embed --role ingest,embed --grpc-addr 127.0.0.1:50062 --audit-endpoint http://127.0.0.1:50061
matchers=()
for i in 0 1 2 3; do
    shard=$((i / 2))
    port=$((50071 + i))
    start "matcher-$i" service-matcher --role matcher --grpc-addr "127.0.0.1:$port" --shards "$GALLERY:$shard" \
        --metrics-addr "127.0.0.1:$((9171 + i))"
    matchers+=("http://127.0.0.1:$port")
done
start search service-search+gateway --role search,gateway --grpc-addr 127.0.0.1:50051 --http-addr 127.0.0.1:8080 \
    --metrics-addr 127.0.0.1:9170 \
    --audit-endpoint http://127.0.0.1:50061 --ingest-endpoint http://127.0.0.1:50062 \
    --embed-endpoint http://127.0.0.1:50062 --matcher-endpoints "$(IFS=,; echo "${matchers[*]}")"
"$BIN" token issue --role admin --sub local-admin --ttl 12h --key "$DIR/keys/ops.key.pem" > "$DIR/admin.token"
echo "local cluster up: search gRPC 127.0.0.1:50051, REST 127.0.0.1:8080, ingest 127.0.0.1:50062,"
echo "audit 127.0.0.1:50061, matchers 127.0.0.1:50071-50074 ($GALLERY shards 0,0,1,1);"
echo "/metrics: search+gateway 127.0.0.1:9170, matchers 127.0.0.1:9171-9174."
echo "admin token: $DIR/admin.token; logs: $DIR/logs; stop: $0 stop"
