# `make demo` and `make test` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch; a plain `torch` would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
TORCHVISION := torchvision==0.28.0

.PHONY: demo test lint setup clean bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	# torchvision, a test and benchmark dependency only (the library never imports it): without
	# its dependencies, which would replace the CPU torch by a CUDA build.
	$(BIN)/pip install --quiet --no-deps $(TORCHVISION)
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/dynscale demo

test: setup
	$(BIN)/python -m pytest

# Every benchmark behind docs/RESULTS.md, and the side-by-side report (hours: see benchmarks/all.sh;
# ONLY="report us" runs some steps).
bench: setup
	bash benchmarks/all.sh

lint: setup
	$(BIN)/ruff check dynscale tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
