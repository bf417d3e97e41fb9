#!/usr/bin/env bash
# `make run`: the API (uvicorn, ASGI), one Celery worker and Flower, on the embedded SQLite
# database unless DATABASE_URL points at PostgreSQL. Ctrl-C stops all three.
# Ports: HELIX_API_PORT (8080), HELIX_FLOWER_PORT (5555). Logs go to logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PY")
API_PORT=${HELIX_API_PORT:-8080}
FLOWER_PORT=${HELIX_FLOWER_PORT:-5555}
LOGS=${HELIX_LOG_DIR:-logs}
VAR=${HELIX_VAR_DIR:-var}
mkdir -p "$LOGS" "$VAR"

"$PY" manage.py migrate --noinput -v0
TOKEN=$("$PY" manage.py create_token "make-run" --admin)
ADMIN_PASSWORD=$("$PY" manage.py ensure_admin)

pids=()
cleanup() { trap - EXIT INT TERM; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$BIN/celery" -A helixagent worker -E --loglevel INFO --concurrency "${HELIX_WORKER_CONCURRENCY:-2}" \
  --hostname "worker@%h" >"$LOGS/worker.log" 2>&1 &
pids+=($!)
FLOWER_UNAUTHENTICATED_API=true "$BIN/celery" -A helixagent flower --address=127.0.0.1 --port="$FLOWER_PORT" \
  >"$LOGS/flower.log" 2>&1 &
pids+=($!)
"$BIN/uvicorn" helixagent.asgi:application --host 127.0.0.1 --port "$API_PORT" --log-level warning \
  >"$LOGS/api.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$API_PORT") 2>/dev/null && break
  sleep 0.1
done
DB=$("$PY" -c 'from helixagent.config import get_config; print("PostgreSQL" if get_config().uses_postgresql else "SQLite (embedded)")')
cat <<INFO
HelixAgent is running ($DB, legacy mode).
  API        http://127.0.0.1:$API_PORT/v1/tasks      (Authorization: Bearer $TOKEN)
  OpenAPI    http://127.0.0.1:$API_PORT/openapi.json
  Health     http://127.0.0.1:$API_PORT/health
  Admin      http://127.0.0.1:$API_PORT/django-admin/ (admin / $ADMIN_PASSWORD)
  Flower     http://127.0.0.1:$FLOWER_PORT/
Try: curl -X POST http://127.0.0.1:$API_PORT/v1/tasks -H 'Authorization: Bearer $TOKEN' \\
       -H 'Content-Type: application/json' -d '{"task_type": "echo", "payload": {"hello": "world"}}'
Logs in $LOGS/. Ctrl-C stops everything.
INFO
wait -n "${pids[@]}"
echo "a process exited; see $LOGS/ (stopping the others)" >&2
exit 1
