# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# `make test-extras`: a second environment with the real torchvision/timm/transformers/lightning
# (torch 2.14.1 + torchvision 0.29.1, ~6 GB) running the tests marked `extras`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

EXTRAS_VENV := .venv-extras
EXTRAS_BIN := $(EXTRAS_VENV)/bin
EXTRAS_STAMP := $(EXTRAS_VENV)/.installed

.PHONY: demo test test-extras install install-extras data clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,plot,det,hf,lightning]"
	touch $(STAMP)

install: $(STAMP)

$(EXTRAS_STAMP): pyproject.toml
	$(PY) -m venv $(EXTRAS_VENV)
	$(EXTRAS_BIN)/pip install -q --upgrade pip
	$(EXTRAS_BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(EXTRAS_BIN)/pip install -q -e ".[test,plot,det,vision,hf,lightning]"
	touch $(EXTRAS_STAMP)

install-extras: $(EXTRAS_STAMP)

# Debian's Fashion-MNIST package, where we are root and apt works; otherwise the demo says what to do.
data:
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -q && apt-get install -y -q dataset-fashion-mnist) >/dev/null 2>&1 || echo "could not apt-get install dataset-fashion-mnist; pass --data DIR"; \
	fi

demo: $(STAMP) data
	$(BIN)/python -m kdforge.demo

test: $(STAMP) data
	$(BIN)/python -m pytest

# pytest exits 5 when no test is selected; that must fail CI, so it is not masked.
test-extras: $(EXTRAS_STAMP) data
	$(EXTRAS_BIN)/python -m pytest -m extras

clean:
	rm -rf $(VENV) $(EXTRAS_VENV) runs .pytest_cache
