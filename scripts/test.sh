#!/usr/bin/env bash
# `make test`: start PostgreSQL, RabbitMQ and Kafka (installing them if needed), then run the
# whole suite against them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
eval "$(scripts/services.sh up)"
exec "$PY" -m pytest "$@"
