# flowmixup: `make help` lists the targets.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PROFILE ?= mini
SEEDS ?= 0
STAMP := .install.stamp

.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

install: $(STAMP)  ## install the package and its test dependencies (pip, editable)

$(STAMP): pyproject.toml
	$(PIP) install -e ".[dev]"
	@touch $(STAMP)

train: install  ## train Flow-Mixup on the embedded synthetic ECG data (about 2 minutes on 2 CPU cores)
	$(PYTHON) train.py

test: install  ## run the whole test suite (slow tests included)
	$(PYTHON) -m pytest -q

lint: install  ## check formatting (ruff format), lint rules (ruff check) and the layer contracts (lint-imports)
	$(PYTHON) -m ruff format --check src scripts tests train.py
	$(PYTHON) -m ruff check src scripts tests train.py
	lint-imports

format: install  ## reformat the code in place (ruff format, then ruff check --fix)
	$(PYTHON) -m ruff format src scripts tests train.py
	$(PYTHON) -m ruff check --fix src scripts tests train.py

test-fast: install  ## run the tests, skipping the slow end-to-end ones
	$(PYTHON) -m pytest -q -m "not slow"

data: install  ## build a dataset cache: make data DATASET=chestxray14 ROOT=/path/to/nih
	$(PYTHON) scripts/prepare_data.py dataset=$(DATASET) dataset.root=$(ROOT)

clean:  ## remove caches of Python and pytest (never data/ or outputs/)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf .pytest_cache $(STAMP)

.PHONY: help install train test test-fast lint format data clean

reproduce-tables: install  ## run the paper's grid (PROFILE=mini|paper, SEEDS=0,1,2, ARGS=...) and write Tables I-III + figures
	$(PYTHON) scripts/reproduce_tables.py --profile $(PROFILE) --seeds $(SEEDS) $(ARGS)

tables: install  ## re-aggregate a finished sweep: make tables SWEEP=outputs/tables/mini
	$(PYTHON) scripts/make_tables.py $(SWEEP)

.PHONY: reproduce-tables tables

bench: install  ## measure step-time and FLOP ratios, loader speed-ups and MFU; writes outputs/bench/bench.json (~4 min)
	$(PYTHON) scripts/bench.py

.PHONY: bench

gpu-check: install  ## on a GPU: step time/memory per backbone x regularizer, loader wait, runs per GPU, determinism (~7 min)
	$(PYTHON) scripts/gpu_check.py $(ARGS)

.PHONY: gpu-check

gpu-perf: install  ## on a GPU (est. 5-8 min, untimed): device ceiling, steps vs it (fraction of peak, busy share, syncs, cuda_graph rows), graphed = eager
	$(PYTHON) scripts/gpu_check.py --sections peak,steps --out outputs/gpu_check/gpu_perf.json $(ARGS)
	$(PYTHON) -m pytest -q tests/test_cuda_graph.py

.PHONY: gpu-perf
