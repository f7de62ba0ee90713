# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit fuzz bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[cli,speed,compliance,test,bench]"
	@touch $(STAMP)

install: $(STAMP)

## The main job, on the embedded emulator.
demo: install
	$(BIN)/bwasync demo

## Lint, type-check and run the whole test suite.
test: lint typecheck unit

lint: install
	$(BIN)/ruff check bwasync tests benchmarks
	$(BIN)/ruff format --check bwasync tests benchmarks

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -n 2

## The property-based tests at 10,000 examples each (a few dozen in `make test`); takes minutes.
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -n 2 -m fuzz

## The benchmark harness (prints tables, writes benchmarks/results/latest.json).
bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
