#!/usr/bin/env bash
# Fuzzes the REST API with schemathesis against its own OpenAPI document
# (GET /api/v1/openapi.json): no 5xx, every response matches the documented schema and
# status codes.
#
#   PULSE_SKIP_DASHBOARD_BUILD=1 cargo build -p server
#   bash xtask/schemathesis/run.sh
#
# Environment:
#   PULSE_SERVER_BIN            server binary (default: target/debug/server)
#   SCHEMATHESIS_MAX_EXAMPLES   test cases per operation and phase (default: 30)
#   SCHEMATHESIS_SEED           hypothesis seed (default: 20240801)
#   SCHEMATHESIS_TIMEOUT        hard limit on the run, in seconds (default: 240)
#   SCHEMATHESIS_VENV           virtualenv (default: target/schemathesis-venv)
# Extra arguments are passed on to `schemathesis run`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

server_bin="${PULSE_SERVER_BIN:-target/debug/server}"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-30}"
seed="${SCHEMATHESIS_SEED:-20240801}"
run_timeout="${SCHEMATHESIS_TIMEOUT:-240}"
venv="${SCHEMATHESIS_VENV:-target/schemathesis-venv}"

if [[ ! -x "$server_bin" ]]; then
    echo "no server binary at $server_bin; build it (PULSE_SKIP_DASHBOARD_BUILD=1 cargo build -p server) or set PULSE_SERVER_BIN" >&2
    exit 2
fi

# --- schemathesis, pinned, in its own virtualenv ---------------------------------------
if [[ ! -x "$venv/bin/schemathesis" ]]; then
    echo "creating $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r xtask/schemathesis/requirements.txt
fi

# --- the server: free port, temporary SQLite database -----------------------------------
work="$(mktemp -d -t pulse-schemathesis.XXXXXX)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
base="http://127.0.0.1:$port"
admin_password="schemathesis-admin-password"

BIND_ADDR="127.0.0.1:$port" \
DATABASE_URL="sqlite://$work/pulse.db" \
JWT_SECRET="schemathesis-jwt-secret-at-least-32-bytes-long" \
ADMIN_USERNAME=admin \
ADMIN_PASSWORD="$admin_password" \
PULSE_SKIP_DASHBOARD_BUILD=1 \
RUST_LOG=warn \
WS_MAX_CONNECTIONS_PER_USER=1000 \
    "$server_bin" >"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 100); do
    if curl -fsS "$base/healthz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "the server exited at start:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null

token="$(curl -fsS -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$admin_password\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"

# --- the run ------------------------------------------------------------------------------
# From the temporary folder: schemathesis keeps a cache of past failures (`.schemathesis/`)
# in its working directory, which would make runs depend on earlier ones.
status=0
schemathesis_bin="$(cd "$(dirname "$venv/bin/schemathesis")" && pwd)/schemathesis"
(cd "$work" && timeout --signal=INT --kill-after=15 "$run_timeout" \
    "$schemathesis_bin" run "$base/api/v1/openapi.json" \
    --url "$base" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
    --max-examples "$max_examples" \
    --seed "$seed" \
    --generation-database none \
    --request-timeout 10 \
    --workers 1 \
    --no-color \
    "$@") || status=$?

if [[ $status -ne 0 ]]; then
    if [[ $status -eq 124 ]]; then
        echo "schemathesis did not finish within ${run_timeout}s" >&2
    fi
    echo "--- server log (warnings and errors) ---" >&2
    tail -n 50 "$work/server.log" >&2 || true
fi
if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "the server died during the run:" >&2
    tail -n 50 "$work/server.log" >&2 || true
    status=1
fi
exit "$status"
