PYTHON ?= .venv/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: setup setup-all test test-scale test-pg-all test-python-path unit integration lint format demo bench clean

setup:  ## what the demo needs: Debian's PostgreSQL and the venv (idempotent, quick when done)
	bash .ci/setup

setup-all:  ## also the test servers: MariaDB, MySQL 9.7, NATS, Kafka + registry (idempotent)
	bash .ci/setup --all

test: setup-all  ## the whole suite: unit and integration tests against real servers
	$(PYTHON) -m pytest -q tests

test-python-path: setup-all  ## conformance, type and kill -9 tests on the pure-Python reference path (CDC_NATIVE=0)
	CDC_NATIVE=0 $(PYTHON) -m pytest -q tests/conformance tests/integration/test_postgres_types.py \
	  tests/integration/mysql/test_mysql_types.py tests/integration/test_chaos.py

test-scale: setup-all  ## the scale-marked acceptance runs at full volume (docs/testing.md)
	CDC_TEST_FULL_SCALE=1 $(PYTHON) -m pytest -q -m scale tests

test-pg-all: setup-all  ## the Postgres version matrix on 15, 16, 17 and 18 (docs/testing.md)
	CDC_PG_VERSIONS=15,17,18 $(PYTHON) -m pytest -q -k postgres \
	  tests/integration/test_postgres_types.py tests/integration/test_postgres_snapshot.py \
	  tests/conformance/test_sources.py
	@# 16's build (PyPI's pgserver) has no contrib modules: the type test's hstore, ltree and
	@# citext columns cannot be made there, so 16 runs the snapshot tests and the conformance suite
	CDC_PG_VERSIONS=16 $(PYTHON) -m pytest -q -k postgres \
	  tests/integration/test_postgres_snapshot.py tests/conformance/test_sources.py

unit:
	$(PYTHON) -m pytest -q -m unit tests

integration:
	$(PYTHON) -m pytest -q -m integration tests

lint:
	$(PYTHON) -m ruff check cdc sources sinks scratch tests bench
	$(PYTHON) -m ruff format --check cdc sources sinks scratch tests bench
	$(PYTHON) -m mypy cdc  # cdc/sources and cdc/sinks: symlinks to sources/ and sinks/
	@# the compiled hot path (native/): rustfmt and clippy, where cargo and those components are
	@if [ -f "$$HOME/.cargo/env" ]; then . "$$HOME/.cargo/env"; fi; \
	if cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then \
	  cd native && cargo fmt --check && cargo clippy -q --release -- -D warnings; \
	else echo "lint: cargo fmt/clippy not found: native/ not linted (it still builds)"; fi

format:
	$(PYTHON) -m ruff format cdc sources sinks scratch tests bench
	$(PYTHON) -m ruff check --fix cdc sources sinks scratch tests bench

demo: setup  ## a scratch Postgres feeding the built-in log; prints the captured events
	$(PYTHON) -m scratch.demo

bench: setup-all  ## throughput/latency of the pipelines (log, Kafka, database targets) beside their ceilings (BENCH_ARGS="--scale 1")
	$(PYTHON) -m bench $(BENCH_ARGS)

clean:
	rm -rf .demo data
