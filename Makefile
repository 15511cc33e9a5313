# Two entry points for a fresh clone (see README): `make demo` and `make test`.
# Each creates .venv from the pinned requirements on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Developer copies of the datasets next to a source checkout, for the demo, the benchmarks and the tests (nothing
# in src/ knows about ../shared); empty when absent, which the code reads as unset.
export GPT2_HELLASWAG_PATH ?= $(abspath $(wildcard ../shared/data/hellaswag/hellaswag_val.jsonl))
export GPT2_WIKI_PATH ?= $(abspath $(wildcard ../shared/data/wiki/enwiki_sample.jsonl))

.PHONY: venv demo test lint browser clean

$(STAMP): requirements/lock.txt requirements/dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m tools.demo

browser:
	bash scripts/install-browser.sh

test: $(STAMP) browser
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests tools *.py
	$(VENV)/bin/ruff format --check src tests tools *.py
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
