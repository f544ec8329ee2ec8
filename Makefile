# Two commands: `make up` runs the whole system, `make test` runs every test.
# Each creates .venv (Python 3.11+) and installs what it needs.
SHELL := /bin/bash
PY ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
UP_STAMP := $(VENV)/.installed-up

.PHONY: up test test-unit test-integration bench install clean compose-check

$(BIN)/python:
	@test -n "$(PY)" || { echo "Python 3.11 or newer is required (none found on PATH)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# `make up` installs only what running needs; tests and benchmarks add theirs.
$(UP_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,test,bench]'
	touch $@ $(UP_STAMP)

install: $(STAMP)

up: $(UP_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m config.up

# Unit tests, then the integration, end-to-end and fault suites once per broker.
# The RabbitMQ pass keeps the app's data in PostgreSQL, the Redis pass in SQLite.
# tests/faults starts private brokers of its own, so it runs in a process of its own.
test: $(STAMP)
	$(BIN)/python -m pytest tests/unit
	FLOODGATE_TEST_BROKER=redis $(BIN)/python -m pytest tests/integration
	FLOODGATE_TEST_BROKER=redis $(BIN)/python -m pytest tests/faults
	FLOODGATE_TEST_BROKER=amqp TEST_DATABASE=postgresql $(BIN)/python -m pytest tests/integration
	FLOODGATE_TEST_BROKER=amqp TEST_DATABASE=postgresql $(BIN)/python -m pytest tests/faults

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.run_all

compose-check:
	RABBITMQ_USER=fg RABBITMQ_PASSWORD=check POSTGRES_PASSWORD=check \
	FLOWER_BASIC_AUTH=admin:check GRAFANA_ADMIN_PASSWORD=check docker-compose config --quiet

clean:
	rm -rf var
