# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install data clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,plot,det,hf]"
	touch $(STAMP)

install: $(STAMP)

# Debian's Fashion-MNIST package, where we are root and apt works; otherwise the demo says what to do.
data:
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -q && apt-get install -y -q dataset-fashion-mnist) >/dev/null 2>&1 || echo "could not apt-get install dataset-fashion-mnist; pass --data DIR"; \
	fi

demo: $(STAMP) data
	$(BIN)/python -m kdforge.demo

test: $(STAMP) data
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
