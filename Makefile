# Two commands: `make up` runs the whole system, `make test` runs every test.
# Each creates .venv (Python 3.11+) and installs what it needs.
SHELL := /bin/bash
PY ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
UP_STAMP := $(VENV)/.installed-up

.PHONY: up test test-unit test-integration test-sqs test-lib matrix docs bench install clean compose-check lock

$(BIN)/python:
	@test -n "$(PY)" || { echo "Python 3.11 or newer is required (none found on PATH)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# `make up` installs only what running needs; tests and benchmarks add theirs.
# The app depends on the library celery-floodgate (lib/), installed from lib/ in the same
# pip run, as any other project would install it from an index.
$(UP_STAMP): pyproject.toml lib/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ./lib -e '.[dev]'
	touch $@

# CI (CI set, as .ci/run sets it) installs exactly requirements/test.lock, each file checked
# against its hash and wheels only, then the two local packages without their dependencies;
# development installs the newest releases pyproject.toml allows, as `make up` does.
$(STAMP): pyproject.toml lib/pyproject.toml requirements/test.lock | $(BIN)/python
	if [ -n "$$CI" ]; then \
		$(BIN)/pip install --quiet --require-hashes --only-binary=:all: -r requirements/test.lock \
		&& $(BIN)/pip install --quiet --no-deps --no-build-isolation -e ./lib -e . ; \
	else \
		$(BIN)/pip install --quiet -e ./lib -e '.[dev,test,bench,sqs]' ; \
	fi
	touch $@ $(UP_STAMP)

install: $(STAMP)

up: $(UP_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m config.up

# Unit tests, then the integration, end-to-end and fault suites once per broker.
# The RabbitMQ pass keeps the app's data in PostgreSQL, the Redis pass in SQLite.
# tests/faults starts private brokers of its own, so it runs in a process of its own.
test: $(STAMP)
	$(BIN)/python -m pytest tests/unit
	$(MAKE) test-lib docs
	FLOODGATE_TEST_BROKER=redis $(BIN)/python -m pytest tests/integration
	FLOODGATE_TEST_BROKER=redis $(BIN)/python -m pytest tests/faults
	FLOODGATE_TEST_BROKER=amqp TEST_DATABASE=postgresql $(BIN)/python -m pytest tests/integration
	FLOODGATE_TEST_BROKER=amqp TEST_DATABASE=postgresql $(BIN)/python -m pytest tests/faults
	$(SQS_PASS)

# SQS (docs/app/sqs.md): the fan-out flow, the limit and refusal tests, the duplicate and
# metrics rows and tests/integration/test_sqs.py, on moto servers the tests start.
SQS_TESTS := tests/integration/test_sqs.py tests/integration/test_flow.py \
	tests/integration/test_back_pressure.py \
	tests/integration/test_faults_api.py::test_row8_duplicate_deliveries_of_a_fanout_have_one_effect \
	tests/integration/test_faults_api.py::test_row9_a_countdown_the_broker_would_redeliver_is_refused_at_submission \
	tests/integration/test_faults_api.py::test_metrics_expose_depth_limit_counters_and_drain_rate
SQS_PASS = FLOODGATE_TEST_BROKER=sqs $(BIN)/python -m pytest $(SQS_TESTS)

test-sqs: $(STAMP)
	$(SQS_PASS)

# The library as a user installs it (lib/noxfile.py, docs/compatibility.md): its wheel
# in fresh virtualenvs, its suite and examples/ on both brokers, and mypy --strict.
# nox finds each Python of the matrix on PATH; pyenv's shim cannot run 3.13, so the
# directory of a pyenv 3.13, where there is one, goes first.
PY313_BIN ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin))
NOX = PATH="$(if $(PY313_BIN),$(PY313_BIN):)$$PATH" $(BIN)/nox -f lib/noxfile.py

# Every change: the oldest and the newest supported Celery on Python 3.11, and mypy.
test-lib: $(STAMP)
	$(NOX) -t ci

# The whole matrix: every supported Celery minor x Python 3.11 and 3.13.
matrix: $(STAMP)
	$(NOX) -t matrix

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.run_all

# The Python dependencies, pinned with their hashes for CPython 3.11 on Linux x86_64:
# requirements/app.lock (what the Dockerfile installs) and requirements/test.lock (CI),
# compiled from requirements/*.in, which name the two local packages so that their
# dependencies are resolved while they themselves stay out of the locks. Keeps the pins
# already there; `make lock LOCK_FLAGS=--upgrade` moves every one to the newest release.
UV_VERSION := 0.13.10
LOCK_FLAGS ?=
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --no-emit-package celery-floodgate \
	--no-emit-package floodgate-app --custom-compile-command "make lock" $(LOCK_FLAGS)

lock: | $(BIN)/python
	$(BIN)/pip install --quiet 'uv==$(UV_VERSION)'
	$(UV_COMPILE) requirements/app.in -o requirements/app.lock
	$(UV_COMPILE) requirements/test.in -o requirements/test.lock

# Validates docker-compose.yml with Debian's docker-compose, against throwaway secrets
# made by deploy/make-secrets.sh in a temporary directory.
compose-check:
	dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT \
	&& SECRETS_DIR=$$dir/secrets deploy/make-secrets.sh >/dev/null \
	&& SECRETS_DIR=$$dir/secrets docker-compose config --quiet

clean:
	rm -rf var
