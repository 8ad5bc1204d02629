# The two commands in the README: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install lock demo test unit integration chaos chaos-full bench lint clean

install: $(VENV)/.installed

# Exactly the locked, hash-checked dependencies (requirements.lock: runtime, the Docker image's
# too; requirements-dev.lock: the same plus the dev tools), then the project itself without
# resolving anything. pyproject.toml keeps the ranges; `make lock` turns them into the locks.
$(VENV)/.installed: pyproject.toml requirements.lock requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

UV_VERSION = 0.13.9
LOCK = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
       --custom-compile-command 'make lock' pyproject.toml

# Regenerate the locks after changing dependencies in pyproject.toml. Pins already in the lock
# files are kept where the ranges allow; add --upgrade (LOCK_FLAGS=--upgrade) to move them all.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q 'uv==$(UV_VERSION)'
	$(LOCK) $(LOCK_FLAGS) -o requirements.lock
	$(LOCK) $(LOCK_FLAGS) --extra dev -c requirements.lock -o requirements-dev.lock

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
