# Targets for people and CI. `make run` and `make test` set everything up themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install postgres citus promtool chromium faketime wrk run test lint format bench report chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/ensure-python.sh
	PYTHON=$(PYTHON) sh scripts/ensure-python.sh $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

# The tests start their own throwaway PostgreSQL; this installs the server binaries if missing.
postgres:
	sh scripts/ensure-postgres.sh

# Citus for the tests of a distributed central database (tests/citus.py); skips without root.
citus: postgres
	sh scripts/ensure-citus.sh

# promtool checks the alert rules and the exposition (tests/metrics/test_docs.py).
promtool: install
	sh scripts/ensure-promtool.sh $(VENV)

# Debian's chromium for the browser test of the API docs page (tests/http/test_docs_page.py).
chromium:
	sh scripts/ensure-chromium.sh

# libfaketime for the test that steps the daemon's wall clock back (tests/faults/test_clock.py).
faketime:
	sh scripts/ensure-faketime.sh

# wrk, the load generator the HTTP benchmarks prefer (bench/loadgen.py).
wrk:
	sh scripts/ensure-wrk.sh

# Swagger UI for the API docs page, from the npm registry (scripts/vendor-swagger-ui.sh).
.PHONY: swagger-ui
swagger-ui:
	sh scripts/vendor-swagger-ui.sh

run: install
	$(BIN)/edge-node serve

test: install postgres citus promtool chromium faketime
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install wrk
	$(BIN)/python -m bench.http

# Every benchmark in one run: docs/performance/README.md, its plots and results.json.
# AGAINST=REV also measures that revision's request path in-process, in the same run.
report: install wrk
	$(BIN)/python -m bench.report $(if $(AGAINST),--against $(AGAINST))

# The long chaos run by hand: every fault schedule, ROUNDS times, DURATION seconds each.
ROUNDS   ?= 5
DURATION ?= 60
chaos: install postgres
	$(BIN)/python -m tests.system.chaos --rounds $(ROUNDS) --duration $(DURATION)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build *.egg-info

# docs/configuration.md from the configuration schema (tests/config/test_doc.py fails when stale).
.PHONY: docs
docs: install
	$(BIN)/python -m edge_node.config.doc
