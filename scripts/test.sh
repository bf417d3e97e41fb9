#!/usr/bin/env bash
# `make test`: start PostgreSQL, RabbitMQ and Kafka (installing them if needed), check style and
# types, then run the whole suite against the services. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
scripts/services.sh up >/dev/null
eval "$(scripts/services.sh env)"
"$PY" -m ruff check .
"$PY" -m mypy
exec "$PY" -m pytest "$@"
