# Two commands: `make demo` and `make test` (see README "Quick start").
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MFPO := $(VENV)/bin/mfpo
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= demo
DEMO_N ?= 200
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck bench services clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,gpu,gateway,worker,trainer,trl,eval]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(MFPO) synth --n $(DEMO_N) --out $(DEMO_DIR)/items
	$(MFPO) generate $(DEMO_DIR)/items/items.jsonl --out $(DEMO_DIR)/dataset
	@echo
	@echo "results: $(abspath $(DEMO_DIR))/dataset/dataset.jsonl (and dataset.parquet)"
	@echo "gallery: file://$(abspath $(DEMO_DIR))/dataset/gallery.html"

services:
	bash scripts/test-services.sh

test: install services
	$(VENV)/bin/ruff check mfpo services worker trainer tests bench scripts
	$(VENV)/bin/mypy
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

bench: install
	$(PY) bench/pipeline.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
