# Two commands on a fresh machine: `make demo` (the main job, end to end) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean-venv

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Train on the built-in phantom data, evaluate, export, serve locally and segment a scan via gRPC.
demo: $(STAMP)
	$(PY) -m sassnet_tf.demo --output outputs/demo

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b; done

clean-venv:
	rm -rf $(VENV)
