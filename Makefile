# Two commands do everything on a fresh machine (see README):
#   make demo    train MWB-VAE on the built-in PolyMNIST and print its metrics
#                (DATASET=mnist-svhn-text-mini or celeba-mini for the other built-in sets)
#   make check   lint, the whole test suite, the docs, the release build, the quick benchmarks
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch is pinned for the environment only (a CPU build lies on the project's machines);
# the package itself asks for a range, torch>=2.2.
TORCH  ?= torch==2.13.0

.PHONY: install demo test lint docs dist bench bench-quick bench-vae bench-busy check clean

BASE   := $(VENV)/.torch
DEMO_STAMP := $(VENV)/.installed-examples

# The demo needs only torch and the examples' extras (a fresh machine saves the docs and
# release tools, and the byte-compiling of torch: `--no-compile`, modules compile on import).
$(BASE): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile "$(TORCH)"
	touch $(BASE)

$(DEMO_STAMP): $(BASE)
	$(PY) -m pip install -q --no-compile -e ".[examples]"
	touch $(DEMO_STAMP)

$(STAMP): $(BASE)
	$(PY) -m pip install -q -e ".[test,docs,examples,release]"
	touch $(STAMP)

install: $(STAMP)

# The built-in sets: polymnist-mini (default), mnist-svhn-text-mini, celeba-mini.
DATASET ?= polymnist-mini
DEMO_RUN := runs/demo-mwb$(if $(filter-out polymnist-mini,$(DATASET)),-$(DATASET))

demo: $(DEMO_STAMP)
	$(PY) examples/multimodal_vae/train.py \
		--config examples/multimodal_vae/configs/$(subst -,_,$(DATASET)).json \
		--aggregation mwb --run-dir $(DEMO_RUN) --overwrite

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples docs conftest.py
	$(PY) -m ruff format --check src tests benchmarks examples docs conftest.py

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html
	$(PY) -m sphinx -W --keep-going -b doctest -D plot_gallery=0 docs docs/_build/doctest

dist: $(STAMP)
	rm -rf dist build
	$(PY) -m build --sdist --wheel --outdir dist .
	$(PY) -m twine check --strict dist/*
	bash .ci/check_wheel.sh dist

bench-quick: $(STAMP)
	$(PY) benchmarks/run.py --quick --output benchmarks/results/quick
	$(PY) benchmarks/host_policies.py --quick --output benchmarks/results/quick

bench: $(STAMP)
	$(PY) benchmarks/run.py

# The five aggregations of the multimodal VAE on DATASET, 3 seeds each (about an hour on
# 2 cores).
bench-vae: $(STAMP)
	$(PY) benchmarks/vae_aggregations.py --dataset $(DATASET)

# Thread settings with and without a competing process (several minutes on 2 cores).
bench-busy: $(STAMP)
	$(PY) benchmarks/busy_cores.py

check: lint test docs dist bench-quick

clean:
	rm -rf $(VENV) build dist docs/_build docs/auto_examples docs/sg_execution_times.rst src/*.egg-info
