# Two commands do all the set-up on a fresh machine:
#   make tour   -> trains CLIP, DALL-E and DDPM on `shapes` end to end and writes runs/tour/report.html
#   make test   -> the test suite (fast; `make test-slow` for the training-to-target tests)
# Each creates (once) and reuses a local virtual environment in .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Multi-device tests run on 8 forced host devices; single-device code paths are tested too.
TEST_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=8

.PHONY: tour tour-fast test test-slow bench lint notebooks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

tour: $(STAMP)
	$(BIN)/minimodal tour --workdir runs/tour

tour-fast: $(STAMP)
	$(BIN)/minimodal tour --fast --workdir runs/tour-fast

test: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check minimodal tests bench data_scripts

notebooks: $(STAMP)
	$(BIN)/jupytext --to ipynb notebooks/*.py

clean:
	rm -rf $(VENV) runs
