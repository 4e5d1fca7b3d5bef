# bilm: `make demo` trains and compares small uni and bi models; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch: a CPU build unless a CUDA GPU is present. On machines with a local wheel cache the
# pinned version installs from it; elsewhere pass TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (or .../cu126 for a GPU) to choose the build explicitly.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
DEMO_MINUTES ?= 6
MODEL_MINUTES ?= 60
# Extra `bilm train` options for the WikiText-2 hour pair, e.g. MODEL_ARGS="--layers 1" on a CPU without bf16.
MODEL_ARGS ?=
GUTENBERG_MINUTES ?= 60

# Two commands side by side; fails if either fails.
side_by_side = ( $(1) & a=$$!; $(2) & b=$$!; wait $$a; ra=$$?; wait $$b; rb=$$?; exit $$(( ra || rb )) )

ifneq ($(wildcard ../shared/corpora),)
export BILM_CORPUS_DIR ?= $(abspath ../shared/corpora)
endif

LAB_CELLS ?= rnn-sigmoid,rnn-tanh,rnn-relu,irnn,gru,lstm,esn
# `make lab` leaves the ledger (reports/ledger) and its adding-problem runs in bench form (reports/ledger/runs).
BENCH_DIRS := $(if $(wildcard reports/ledger/runs/adding.json),--bench reports/ledger/runs)
LEDGER := $(if $(wildcard reports/ledger/report.json),--ledger reports/ledger)
LEDGER_CHECKPOINTS := $(if $(and $(wildcard checkpoints/demo-uni),$(wildcard checkpoints/demo-bi)),--uni checkpoints/demo-uni --bi checkpoints/demo-bi)

.PHONY: setup demo models report lab test lint clean figures figures-all

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q \
		$(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# uni and bi side by side, one thread each (bilm's default), so both get the whole budget.
demo: setup
	$(BIN)/bilm prepare wikitext-2
	rm -rf checkpoints/demo-uni checkpoints/demo-bi
	$(call side_by_side,\
		$(BIN)/bilm train --model uni --corpus wikitext-2 --max-minutes $(DEMO_MINUTES) --out checkpoints/demo-uni,\
		$(BIN)/bilm train --model bi --corpus wikitext-2 --max-minutes $(DEMO_MINUTES) --out checkpoints/demo-bi)
	$(BIN)/python scripts/show_predictions.py checkpoints/demo-uni checkpoints/demo-bi

# The hour models (docs/quality.md): WikiText-2 uni and bi (--preset large, MODEL_MINUTES each, side by side),
# the Gutenberg pair for MSCC (GUTENBERG_MINUTES each, 2 hours in all: uni 2x400 and bi 2x300, dropout 0.1 for the
# 2-3 epochs of its 8.7 M words, the best per CPU-minute in the GPU sweep of docs/quality.md), their reports and
# fills. About 2 h 10 min.
models: setup
	$(BIN)/bilm prepare wikitext-2
	$(BIN)/bilm prepare gutenberg
	rm -rf checkpoints/wt2-uni checkpoints/wt2-bi checkpoints/gut-uni checkpoints/gut-bi
	$(call side_by_side,\
		$(BIN)/bilm train --model uni --preset large --corpus wikitext-2 --average 0.2 $(MODEL_ARGS) --max-minutes $(MODEL_MINUTES) --out checkpoints/wt2-uni,\
		$(BIN)/bilm train --model bi --preset large --corpus wikitext-2 --average 0.2 $(MODEL_ARGS) --max-minutes $(MODEL_MINUTES) --out checkpoints/wt2-bi)
	$(call side_by_side,\
		$(BIN)/bilm train --model uni --corpus gutenberg --preset large --dropout 0.1 --max-minutes $(GUTENBERG_MINUTES) --eval-every 2000 --out checkpoints/gut-uni,\
		$(BIN)/bilm train --model bi --corpus gutenberg --hidden 300 --emb 300 --dropout 0.1 --lr 3e-3 --max-minutes $(GUTENBERG_MINUTES) --eval-every 2000 --out checkpoints/gut-bi)
	$(BIN)/bilm evaluate --uni checkpoints/wt2-uni --bi checkpoints/wt2-bi --split test --cache --out reports/wt2-models
	$(BIN)/bilm mscc --uni checkpoints/gut-uni --bi checkpoints/gut-bi --out reports/mscc
	$(BIN)/python scripts/show_predictions.py checkpoints/wt2-uni checkpoints/wt2-bi

# The evaluation report of the demo models, with the gradient lab as its last sections
# (and, once `make lab` has run, the adding-problem runs and the ledger of the notes' claims).
report: setup
	$(BIN)/bilm gradients checkpoints/demo-uni checkpoints/demo-bi --untrained --cell $(LAB_CELLS) \
		--corpus wikitext-2 --lengths 10,20,40,80 $(BENCH_DIRS) --out reports/gradients
	$(BIN)/bilm evaluate --uni checkpoints/demo-uni --bi checkpoints/demo-bi --split test \
		--gradients reports/gradients $(LEDGER) --out reports/wt2

# The ledger (at most 20 minutes on 2 cores): every claim of the RNN notes tested and given a verdict
# by rule (bilm/ledger.py); claim 7 uses the demo checkpoints when they exist (after `make demo`).
lab: setup
	$(BIN)/bilm ledger $(LEDGER_CHECKPOINTS) --out reports/ledger

# Every figure the README and docs/ quote, from the current defaults, stamped with the machine
# (scripts/figures.py rewrites the figure:NAME blocks and docs/figures.md). figures-all adds the lab
# and the hour models (about 2.5 hours more).
figures: demo report
	$(BIN)/python scripts/figures.py

figures-all: demo lab report models
	$(BIN)/python scripts/figures.py

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check bilm tests scripts
	$(BIN)/ruff format --check bilm tests scripts

clean:
	rm -rf $(VENV) data checkpoints reports
