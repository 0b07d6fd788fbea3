# Two commands do all the set-up on a fresh machine:
#   make tour   -> trains CLIP, DALL-E and DDPM on `shapes` end to end and writes runs/tour/report.html
#   make test   -> the test suite (fast; `make test-slow` for the training-to-target tests)
#   make tour-fast -> the same at 16 px with short training (about 5 minutes); `minimodal tour --smoke` checks it runs
#   make lessons -> executes every lesson in full mode (training what it names) and writes its outputs
#   make site    -> the executed lessons as static HTML in site/ (index.html), maths rendered offline
# Each creates (once) and reuses a local virtual environment in .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DOCS   := $(VENV)/.installed-docs
# Multi-device tests run on 8 forced host devices; single-device code paths are tested too. `make test` runs
# the suite on every core (pytest-xdist; tests/conftest.py starts the longest first). glibc's malloc maps its large
# blocks in transparent huge pages (minimodal/host_memory.py: HUGE_PAGES): fewer page faults per train step; a
# GLIBC_TUNABLES of the caller's is kept, and left as it is when it sets glibc.malloc.hugetlb itself or when
# MINIMODAL_KEEP_FREED_MEMORY=0 asks minimodal to leave malloc alone (as `huge_pages_environment` does).
HUGE_PAGES := glibc.malloc.hugetlb=1
TUNABLES := $(if $(or $(findstring glibc.malloc.hugetlb,$(GLIBC_TUNABLES)),$(filter 0,$(MINIMODAL_KEEP_FREED_MEMORY))),$(GLIBC_TUNABLES),$(if $(GLIBC_TUNABLES),$(GLIBC_TUNABLES):)$(HUGE_PAGES))
TEST_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=8 GLIBC_TUNABLES=$(TUNABLES)

.PHONY: tour tour-fast test test-slow bench lint notebooks lessons site clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

$(DOCS): $(STAMP)
	$(BIN)/pip install -q -e ".[docs]"
	touch $(DOCS)

tour: $(STAMP)
	$(BIN)/minimodal tour --workdir runs/tour

tour-fast: $(STAMP)
	$(BIN)/minimodal tour --fast --workdir runs/tour-fast

test: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -n auto

test-slow: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check minimodal tests bench data_scripts

# Syncs each .ipynb with its edited .py source, keeping the outputs of unchanged cells (`make lessons` refreshes them).
notebooks: $(STAMP)
	$(BIN)/jupytext --to ipynb --update notebooks/*.py

lessons: $(STAMP)
	$(BIN)/python -m minimodal.publish lessons

site: $(DOCS)
	$(BIN)/python -m minimodal.publish site site

clean:
	rm -rf $(VENV) runs site
