# The two commands a new user needs: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint check bench fault clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml subscriber/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ./subscriber -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/wire run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider

fault: $(STAMP)
	$(BIN)/python -m pytest -q -m fault
	WIRE_MODEL_EXAMPLES=500 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_model.py

bench: $(STAMP)
	$(BIN)/wire bench

clean:
	rm -rf $(VENV) .wire .mypy_cache .ruff_cache .pytest_cache
