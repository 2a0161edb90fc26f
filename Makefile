# Two targets are the whole set-up: `make demo` (train + evaluate on the bundled synthetic
# benchmark) and `make test`. Both create .venv when missing and install psdiff editable; the
# install step reruns only when setup.py or requirements.txt change.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DEMO_DIR ?= output/demo
DEMO_ARGS ?=  # e.g. --steps 1 2 4 8

.PHONY: demo test install clean-demo

install: $(INSTALLED)

$(INSTALLED): setup.py requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

test: $(INSTALLED)
	$(VENV)/bin/ruff check psdiff tools tests
	OMP_NUM_THREADS=1 $(PY) -m pytest -q tests

demo: $(INSTALLED)
	$(PY) tools/demo_synthetic.py --output-dir $(DEMO_DIR) $(DEMO_ARGS)

clean-demo:
	rm -rf $(DEMO_DIR)
