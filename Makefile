# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit fuzz bench clean redis-server

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[cli,speed,compliance,test,bench]"
	@touch $(STAMP)

install: $(STAMP)

## Byte-compiled modules are kept under .venv (never beside the sources), even where the environment
## sets PYTHONDONTWRITEBYTECODE: otherwise every pytest worker, and every `bwasync` the tests start,
## compiles the package and the test modules (pytest's assertion rewriting) from scratch, which is
## several seconds of a `make test` run.
export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache
export PYTHONDONTWRITEBYTECODE :=

## The main job, on the embedded emulator.
demo: install
	$(BIN)/bwasync demo

## Lint, type-check and run the whole test suite.
test: lint typecheck unit

lint: install
	$(BIN)/ruff check bwasync tests benchmarks examples
	$(BIN)/ruff format --check bwasync tests benchmarks examples

typecheck: install
	$(BIN)/mypy

unit: install redis-server
	$(BIN)/pytest -n 2 --dist worksteal

## The Redis tests run a real redis-server (Debian's package): install it where we can (root with
## apt-get), else stop with the one command to run.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	  else \
	    echo "redis-server is missing; install it with: sudo apt-get install -y redis-server"; exit 1; \
	  fi; }

## The property-based tests at 10,000 examples each (a few dozen in `make test`); takes minutes.
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -n 2 -m fuzz

## The benchmark harness (prints tables, writes benchmarks/results/latest.json).
bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
