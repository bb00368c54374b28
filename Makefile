# One set of commands, used locally, by the hooks and by CI (.ci/run calls `make test`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format types unit docs clean chaos

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format src tests examples
	$(BIN)/ruff check --fix src tests examples

types: $(STAMP)
	$(BIN)/mypy
	cd examples/django_project && ../../$(BIN)/mypy --config-file ../../pyproject.toml .

# Two xdist workers (the machines have 2 cores; most tests wait on brokers and processes): each
# test module stays on one worker (tests/conftest.py groups them). Tests that stop a shared
# server, and tests/interop (Celery workers and Flower on timers), are marked serial and run
# afterwards, alone.
# COVERAGE=1: branch coverage of src/ over the whole run (the test processes, xdist's workers
# and every Python process they start; see [tool.coverage] in pyproject.toml), combined and
# reported, failing under its floor. It costs time (a tracer in every process, about a quarter
# more): not by default locally; CI sets it (.ci/run).
ifeq ($(COVERAGE),1)
PYTEST := COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage run -m pytest
else
PYTEST := $(BIN)/pytest
endif

unit: $(STAMP)
	rm -f .coverage .coverage.*
	$(PYTEST) -q -n 2 --dist loadgroup -m "not serial"
	$(PYTEST) -q -m serial
ifeq ($(COVERAGE),1)
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage combine -q
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage report
endif

# The chaos suite, long: every fault of every broker CELERIAC_CHAOS_ROUNDS times (default 5);
# CELERIAC_CHAOS_FAULTS=half-open,freeze plays only those. Its short version runs in make unit.
chaos: $(STAMP)
	CELERIAC_CHAOS_ROUNDS=$${CELERIAC_CHAOS_ROUNDS:-5} $(BIN)/pytest -q -s -n 2 --dist loadgroup -m "chaos and not serial" --timeout=3600 tests/chaos
	CELERIAC_CHAOS_ROUNDS=$${CELERIAC_CHAOS_ROUNDS:-5} $(BIN)/pytest -q -s -m "chaos and serial" --timeout=3600 tests/chaos

# The documentation site (MkDocs Material) into build/site/; --strict fails on a broken link.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test: lint types docs unit

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .coverage .coverage.*

# Side-by-side benchmark (bench/): its driver runs in a tools venv of its own (redis-py, matplotlib,
# py-spy), never in celeriac's; each peer gets its own venv under bench/.venvs/ on first run.
# Extra driver flags: make bench BENCH_ARGS="--only celeriac,celery-prefork".
BENCH_TOOLS := bench/.venvs/tools
BENCH_SETUP = cmp -s bench/requirements/tools.txt $(BENCH_TOOLS)/.requirements || { \
	$(PYTHON) -m venv $(BENCH_TOOLS) && \
	$(BENCH_TOOLS)/bin/python -m pip install --quiet --upgrade pip && \
	$(BENCH_TOOLS)/bin/python -m pip install --quiet -r bench/requirements/tools.txt && \
	cp bench/requirements/tools.txt $(BENCH_TOOLS)/.requirements; }

.PHONY: bench bench-quick bench-beat bench-events bench-capacity soak

bench:
	@$(BENCH_SETUP)
	$(BENCH_TOOLS)/bin/python bench/run.py $(BENCH_ARGS)

bench-quick:
	@$(BENCH_SETUP)
	$(BENCH_TOOLS)/bin/python bench/run.py --quick $(BENCH_ARGS)

# Beat at scale (10,000 entries on the local Redis; about two minutes), in celeriac's own venv.
bench-beat: $(STAMP)
	$(BIN)/python bench/beat.py

# What task events, signing and an embedded beat cost: a 20,000-task drain on Redis, each feature
# on against off (events off / on / on with a listener, signed messages, worker -B).
bench-events: $(STAMP)
	$(BIN)/python bench/events.py

# What one Redis and one RabbitMQ sustain: k producers and k workers (k = 1, 2, 3), a no-op
# task, CPU per task of the broker, workers and producers (bench/capacity.py; about 3 minutes).
bench-capacity: $(STAMP)
	$(BIN)/python bench/capacity.py $(CAPACITY_ARGS)

# A million tasks through one worker on Redis (bench/soak.py, celeriac's venv; 25-35 minutes on
# 2 cores): the worker's RSS and Redis' memory must stay flat; bench/results/soak.{csv,svg,json}.
# SOAK_ARGS="--private-redis --out soak-private" gives Redis a server of its own.
soak: $(STAMP)
	$(BIN)/python bench/soak.py $(SOAK_ARGS)
