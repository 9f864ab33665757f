# Everyday targets. Each creates (or reuses) the virtual environment in $(VENV) first.
#   make demo    build the tiny models, write the synthetic data, run the main job on it
#   make test    run the default test suite (no network, no GPU; tests marked slow are left out)
#   make test-all  the default suite and the tests marked slow (not those marked gpu: pytest -m gpu)
#   make lint    ruff check + format check
#   make bench   run the benchmarks (JSON rows under benchmarks/results/)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.multimood-installed
PYTEST_ARGS ?=
DEMO_OUT ?= runs/demo

.PHONY: venv demo test test-all lint format bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python demo.py --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# everything, including the tests marked slow
test-all: $(STAMP)
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
