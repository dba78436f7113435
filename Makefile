# Écoute — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create the virtualenv and install Écoute with pinned versions

kafka-jars: ## fetch Apache Kafka (KRaft) and its dependencies from Maven into deploy/kafka/lib
	$(PYTHON) -m ecoute.brokers fetch

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-tools: ## install the Debian packages the suite needs and lacks (Java, Maven, Chromium, promtool, PostgreSQL)
	deploy/install-test-tools.sh

# REQUIRE_TEST_TOOLS: a test whose tool is missing fails instead of skipping, and any skip fails the run.
test: test-tools $(STAMP) kafka-jars lint ## lint, then the whole test suite against a real Kafka broker, nothing skipped
	REQUIRE_TEST_TOOLS=1 $(BIN)/pytest -p no:cacheprovider --durations=40

test-faults: $(STAMP) kafka-jars ## only the fault suite (3-node Kafka cluster; brokers, workers, replicas killed; ~5 min)
	$(BIN)/pytest -p no:cacheprovider -m faults -s

run: $(STAMP) ## start the demo: embedded broker, ingest, analyzer, API, simulated mentions
	$(BIN)/ecoute run --demo

bench: $(STAMP) ## analyzer throughput vs a scoring-only loop (see BENCHMARKS.md)
	$(BIN)/python bench/analyzer_throughput.py

bench-all: $(STAMP) kafka-jars bench ## + two analyzer workers vs one, worker memory with 100 brands, stage 2's input at 10× the mentions
	$(BIN)/python bench/analyzer_scaling.py
	$(BIN)/python bench/analyzer_memory.py
	$(BIN)/python bench/stage2_rate.py

OHA_VERSION := 1.16.0

bench-tools: ## build oha (an open-loop HTTP load generator, for bench/api_load.py) into .tools/ with cargo
	cargo install --locked --root .tools oha --version $(OHA_VERSION)

format: $(STAMP) ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: help venv kafka-jars lint test-tools test test-faults run bench bench-all bench-tools format
