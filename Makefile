# The two commands of the README. Each does its own set-up first (idempotent, quick when done).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PORT ?= 8501
# Where `make run` listens: this machine only unless ABLATION_ADDRESS says otherwise (e.g.
# ABLATION_ADDRESS=0.0.0.0 ABLATION_PASSWORD=... make run; beyond loopback the dashboard shows
# nothing without ABLATION_PASSWORD). Unset or empty: 127.0.0.1, as in cnn_ablation/settings.py.
ADDRESS := $(or $(ABLATION_ADDRESS),127.0.0.1)

# Which Python: an active virtualenv or conda environment is used as it is; otherwise the
# project's own .venv, made from the system's python3 (stock Debian and Ubuntu mark their Python
# "externally managed" (PEP 668): pip refuses to install into it). `make PYTHON=...` overrides.
SYSTEM_PYTHON ?= python3
VENV :=
ifneq ($(origin PYTHON),command line)
  ifneq ($(VIRTUAL_ENV)$(CONDA_PREFIX),)
    PYTHON := python
  else
    PYTHON := .venv/bin/python
    VENV := .venv/bin/python
  endif
endif
# What `setup` installs (pyproject.toml's extras): the runtime for `make run`, everything for tests.
EXTRAS ?=

.PHONY: setup run test test-fast lint bench gpu-wheels

.venv/bin/python:
	@if ! $(SYSTEM_PYTHON) -c "import ensurepip, venv" 2>/dev/null; then \
	  if command -v apt-get >/dev/null; then \
	    echo "installing python3-venv: $(SYSTEM_PYTHON) cannot make a virtualenv without it"; \
	    $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends python3-venv; \
	  else echo "$(SYSTEM_PYTHON) cannot make a virtualenv: install its venv module"; exit 1; fi; \
	fi
	$(SYSTEM_PYTHON) -m venv .venv

setup: $(VENV)
	@if command -v apt-get >/dev/null; then \
	  need=""; \
	  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need="$$need dataset-fashion-mnist"; \
	  [ -n "$(WITH_BROWSER)" ] && ! command -v chromium >/dev/null && need="$$need chromium"; \
	  [ -n "$(WITH_BROWSER)" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && need="$$need postgresql"; \
	  if [ -n "$$need" ]; then $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$need; fi; \
	else echo "no apt-get: install Fashion-MNIST/Chromium yourself (see README)"; fi
	$(PYTHON) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".$(EXTRAS)"

run:
	$(MAKE) setup
	$(PYTHON) -m cnn_ablation dashboard --address "$(ADDRESS)" --port $(PORT)

test:
	$(MAKE) setup WITH_BROWSER=1 EXTRAS=[dev]
	$(MAKE) lint
	$(PYTHON) -m pytest -q

# The quick part (no training processes, no browser): about 8 minutes. `make test` runs everything.
test-fast:
	$(MAKE) setup EXTRAS=[dev]
	$(MAKE) lint
	$(PYTHON) -m pytest -q -m "not slow and not e2e"

lint: $(VENV)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

bench:
	$(MAKE) setup EXTRAS=[dev]
	$(PYTHON) benchmarks/throughput_memory.py

# What a GPU machine with JAX but no TensorFlow and no internet lacks to run the product's worker
# (benchmarks/gpu_check.py says how to install them there): Python 3.12 wheels, the versions of
# constraints.txt, into .whl/ (ignored by git).
GPU_WHEELS := keras namex optree SQLAlchemy greenlet alembic Mako
gpu-wheels: $(VENV)
	mkdir -p .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
	  $$(for w in $(GPU_WHEELS); do grep -i "^$$w==" constraints.txt; done)
	ls .whl
