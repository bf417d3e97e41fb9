# HelixAgent tasks. `make help` lists them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help run services services-status services-down test test-unit bench lint clean

help: ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c requirements.lock
	touch $@

venv: $(VENV)/.installed

run: $(VENV)/.installed ## run API (:8080), one worker and Flower (:5555); SQLite unless DATABASE_URL is set
	scripts/run.sh

services: ## install if missing and start PostgreSQL, RabbitMQ and Kafka on loopback; prints export lines
	scripts/services.sh up

services-status: ## show whether each service answers
	scripts/services.sh status

services-down: ## stop the services started by `make services`
	scripts/services.sh down

test: $(VENV)/.installed ## the whole suite against real PostgreSQL, RabbitMQ and Kafka (starts them)
	scripts/test.sh

test-unit: $(VENV)/.installed ## unit tests only (no services)
	$(PY) -m pytest tests/unit -q

bench: $(VENV)/.installed ## benchmarks against real services; prints results beside their baselines
	scripts/services.sh up >/dev/null
	eval "$$(scripts/services.sh env)" && $(PY) -m bench.legacy && $(PY) -m bench.modes && $(PY) -m bench.publish && $(PY) -m bench.dual_write_parts && $(PY) -m bench.claim && $(PY) -m bench.api

lint: $(VENV)/.installed ## ruff and mypy
	$(PY) -m ruff check .
	$(PY) -m mypy

clean: ## remove the virtualenv, local database and logs
	rm -rf $(VENV) var logs .cache/pytest
