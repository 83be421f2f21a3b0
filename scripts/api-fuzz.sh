#!/usr/bin/env bash
# Property-based test of the REST API driven by its own OpenAPI document (schemathesis, from PyPI):
# starts a demo cluster (every role, one process, SQLite in a scratch directory, loopback only),
# gives it a gallery with a few subjects, then lets schemathesis generate requests for every
# operation with real tokens of each people's role. Fails on any 5xx, any response that does not
# match its documented schema, status or content type.
#
# Usage: scripts/api-fuzz.sh [BIOMATCH_BINARY]   (scripts/test.sh runs it after the test suite)
# API_FUZZ_EXAMPLES (default 20) bounds the requests generated per operation and role.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/biomatch/target}"
BIN="${1:-$CARGO_TARGET_DIR/debug/biomatch}"
EXAMPLES="${API_FUZZ_EXAMPLES:-20}"
VENV="$HOME/.cache/biomatch/schemathesis-venv"
if [ ! -x "$VENV/bin/schemathesis" ]; then
    echo "api-fuzz: installing schemathesis from PyPI"
    python3 -m venv "$VENV" 2>/dev/null || {
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq python3-venv >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    }
    "$VENV/bin/pip" install -q "schemathesis==4.32.5"
fi

DATA=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port)
GRPC_PORT=$(free_port)
OPS_PORT=$(free_port)
"$BIN" serve --role all --data-dir "$DATA" --model-dir models --grpc-addr "127.0.0.1:$GRPC_PORT" \
    --http-addr "127.0.0.1:$HTTP_PORT" --metrics-addr "127.0.0.1:$OPS_PORT" >"$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
BASE="http://127.0.0.1:$HTTP_PORT"
for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null 2>&1 && break
    kill -0 $SERVER 2>/dev/null || { cat "$DATA/serve.log" >&2; echo "api-fuzz: the cluster did not start" >&2; exit 1; }
    sleep 0.2
done

token() { "$BIN" token issue --data-dir "$DATA" --role "$1" --sub "fuzz-$1" --ttl 1h "${@:2}"; }
ADMIN=$(token admin)
ENROLLER=$(token enroller)
ANALYST=$(token analyst --vector-probes)
AUDITOR=$(token auditor)

# A gallery named like the document's examples would be, with subjects to find.
curl -sS --fail-with-body -X POST "$BASE/v1/galleries" -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \
    -d '{"name":"fuzz","dimension":4,"allowed_purposes":["border"],"threshold":0.5,"retention_seconds":3600}' >/dev/null
for i in 1 2 3; do
    curl -sS --fail-with-body -X POST "$BASE/v1/galleries/fuzz/subjects" -H "authorization: Bearer $ENROLLER" \
        -H 'content-type: application/json' -d "{\"subject_id\":\"s$i\",\"embeddings\":[[$i,1,0,0]]}" >/dev/null
done

status=0
for role in ADMIN ENROLLER ANALYST AUDITOR; do
    echo "api-fuzz: as $role"
    # From the scratch directory: schemathesis keeps its cache in the working directory.
    (cd "$DATA" && "$VENV/bin/schemathesis" run "$BASE/v1/openapi.json" \
        --header "Authorization: Bearer ${!role}" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
        --max-examples "$EXAMPLES" --workers 1 --no-color --seed 1) || status=1
done
kill -0 $SERVER 2>/dev/null || { echo "api-fuzz: the cluster died" >&2; tail -n 50 "$DATA/serve.log" >&2; exit 1; }
exit $status
