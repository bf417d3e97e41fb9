#!/usr/bin/env bash
# `make test`: start PostgreSQL, RabbitMQ and Kafka (installing them if needed), check style and
# types, then run the whole suite against the services. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
eval "$(scripts/services.sh up)"
"$PY" -m ruff check .
"$PY" -m mypy
exec "$PY" -m pytest "$@"
