# Every target does its own set-up on a fresh machine: a .venv with the pinned CPU PyTorch.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck demo bench clean

$(STAMP): pyproject.toml requirements-dev.txt constraints-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-dev.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints-dev.txt -e . -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest
	$(MAKE) lint

lint: $(STAMP)
	$(PY) -m ruff check gradguard tests benchmarks examples
	$(PY) -m mypy --strict gradguard

demo: $(STAMP)
	$(PY) examples/evaluate_frozen.py
	@echo "--- gradguard run: a training script with the classic mistakes (it ends in GG003) ---"
	$(PY) -m gradguard run examples/train_with_mistakes.py || echo "(exit status $$?, as expected: the script dies of GG003)"
	@echo "--- gradguard run: its fixed twin ---"
	$(PY) -m gradguard run examples/train_fixed.py
	$(PY) -m gradguard bench --quick

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
