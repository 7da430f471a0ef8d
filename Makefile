# The two commands of the README. Each does its own set-up first (idempotent, quick when done).
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PORT ?= 8501
# Where `make run` listens: this machine only unless ABLATION_ADDRESS says otherwise (e.g.
# ABLATION_ADDRESS=0.0.0.0 ABLATION_PASSWORD=... make run; beyond loopback the dashboard shows
# nothing without ABLATION_PASSWORD). Unset or empty: 127.0.0.1, as in cnn_ablation/settings.py.
ADDRESS := $(or $(ABLATION_ADDRESS),127.0.0.1)

.PHONY: setup run test test-fast lint bench

setup:
	@if command -v apt-get >/dev/null; then \
	  need=""; \
	  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need="$$need dataset-fashion-mnist"; \
	  [ -n "$(WITH_BROWSER)" ] && ! command -v chromium >/dev/null && need="$$need chromium"; \
	  [ -n "$(WITH_BROWSER)" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && need="$$need postgresql"; \
	  if [ -n "$$need" ]; then $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$need; fi; \
	else echo "no apt-get: install Fashion-MNIST/Chromium yourself (see README)"; fi
	$(PYTHON) -m pip install -q --disable-pip-version-check -r requirements.txt

run: setup
	$(PYTHON) -m cnn_ablation dashboard --address "$(ADDRESS)" --port $(PORT)

test:
	$(MAKE) setup WITH_BROWSER=1
	$(MAKE) lint
	$(PYTHON) -m pytest -q

# The quick part (no training processes, no browser): about a minute. `make test` runs everything.
test-fast:
	$(MAKE) lint
	$(PYTHON) -m pytest -q -m "not slow and not e2e"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

bench: setup
	$(PYTHON) benchmarks/throughput_memory.py
