# The two commands of the README. Each creates .venv if missing and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/diffalign demo

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: install
	HF_HUB_OFFLINE=1 $(PY) benchmarks/model_speed.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/embedded_quality.py

clean:
	rm -rf $(VENV) out .pytest_cache
