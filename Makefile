# Every target does its own set-up on a fresh machine: a .venv with the pinned CPU PyTorch.
# `make demo` needs only the package and torch (its own stamp, so it starts quickly);
# `make test`, `lint`, `dist` and `bench` add the development toolchain.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints-dev.txt
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck demo bench dist clean

$(RUNTIME_STAMP): pyproject.toml constraints-dev.txt
	$(PYTHON) -m venv $(VENV)
	@# numpy: without it torch warns "Failed to initialize NumPy" on every start.
	@# --no-compile: byte-compiling all of torch at install costs twice the CPU time of the
	@# install itself; Python compiles the modules a program imports on first use instead.
	$(PIP) --no-compile torch==2.13.0 numpy -e .
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(PY) -m pip install -q --upgrade pip
	$(PIP) -e . -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest
	$(MAKE) lint

lint: $(STAMP)
	$(PY) -m ruff check gradguard tests benchmarks examples
	$(PY) -m mypy --strict gradguard

demo: $(RUNTIME_STAMP)
	@echo "--- python examples/evaluate_frozen.py: a frozen BatchNorm survives an evaluation ---"
	@$(PY) examples/evaluate_frozen.py
	@echo "--- gradguard run: a training script with the classic mistakes (it ends in GG003) ---"
	@$(PY) -m gradguard run examples/train_with_mistakes.py || echo "(exit status $$?, as expected: the script dies of GG003)"
	@echo "--- gradguard run: its fixed twin ---"
	@$(PY) -m gradguard run examples/train_fixed.py
	@echo "--- gradguard bench --quick: what no_grad saves on three model families ---"
	@$(PY) -m gradguard bench --quick

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The sdist and the wheel, in dist/: `pip install dist/gradguard-*.whl` in any environment.
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
