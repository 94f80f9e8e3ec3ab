# Set-up and everyday commands. `make run` and `make test` work on a fresh clone.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# -rs lists each skipped test with its reason, such as a missing Chromium.
PYTEST_ARGS ?= -rs

.PHONY: run test bench lock clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "support-gateway needs Python 3.11 or newer; set PYTHON=python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/support-gateway db upgrade
	$(BIN)/support-gateway serve

# `make test` runs the suite on SQLite, then again on PostgreSQL when the server
# in GATEWAY_TEST_DATABASE_URL answers. Each test gets its own database there,
# dropped afterwards. Set the variable empty to run the SQLite half only.
GATEWAY_TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
PG_HINT := set GATEWAY_TEST_DATABASE_URL=postgresql://USER@HOST:PORT/DB to run it

test: $(STAMP)
	@echo "== test suite on SQLite =="
	GATEWAY_TEST_DATABASE_URL= $(BIN)/python -m pytest $(PYTEST_ARGS)
	@if [ -z "$(GATEWAY_TEST_DATABASE_URL)" ]; then \
		echo "== PostgreSQL half skipped: GATEWAY_TEST_DATABASE_URL is empty; $(PG_HINT) =="; \
	elif ! reason=$$($(BIN)/python tests/postgres_probe.py "$(GATEWAY_TEST_DATABASE_URL)"); then \
		if [ "$(origin GATEWAY_TEST_DATABASE_URL)" = "file" ]; then \
			echo "== PostgreSQL half skipped: no server at $(GATEWAY_TEST_DATABASE_URL) ($$reason); $(PG_HINT) =="; \
		else \
			echo "GATEWAY_TEST_DATABASE_URL is set, but its server did not answer: $$reason"; \
			exit 1; \
		fi; \
	else \
		echo "== test suite on PostgreSQL =="; \
		GATEWAY_TEST_DATABASE_URL="$(GATEWAY_TEST_DATABASE_URL)" $(BIN)/python -m pytest $(PYTEST_ARGS); \
	fi

# Benchmarks (docs/benchmarks.md). BENCH_SCALE=small checks the harness in a few
# minutes; the default full scale takes about 10 minutes on 2 cores. Only a
# full-scale run of every workload rewrites docs/benchmarks.md; other runs write
# bench/.partial-benchmarks.md unless BENCH_ARGS has --out. PostgreSQL must answer
# at GATEWAY_BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres),
# which gets bench_* databases created and dropped, unless BENCH_ARGS=--no-postgres.
# The peer baseline, django-helpdesk, gets its own virtualenv so Django never enters ours.
BENCH_SCALE ?= full
BENCH_ARGS ?=
PEER_VENV := bench/.peer-venv
PEER_STAMP := $(PEER_VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	touch $(BENCH_STAMP)

$(PEER_STAMP): bench/peer-constraints.txt
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet -r bench/peer-constraints.txt
	touch $(PEER_STAMP)

bench: $(BENCH_STAMP) $(PEER_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider bench/micro \
		--benchmark-json=bench/.micro.json --benchmark-max-time=0.5
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py --scale $(BENCH_SCALE) \
		--micro-json bench/.micro.json $(BENCH_ARGS)

# Refresh constraints.txt after changing dependency ranges in pyproject.toml.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e '.[test,bench]'
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache
