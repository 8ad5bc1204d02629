# The two commands in the README: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install demo test unit integration chaos chaos-full bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: install           ## the whole flow on embedded defaults
	$(BIN)/payouts demo

test: install           ## the full suite (unit + integration + short chaos)
	$(BIN)/pytest -q --durations=15

unit: install
	$(BIN)/pytest -q tests/unit

integration: install
	$(BIN)/pytest -q tests/integration

chaos: install          ## the full chaos suite (long; CI runs a shorter version)
	PAYOUTS_CHAOS_FULL=1 $(BIN)/pytest -q -s tests/chaos

bench: install
	$(BIN)/python -m bench.run

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
