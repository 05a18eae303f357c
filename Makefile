# ganforge: `make test` and `make demo` set up everything they need (venv, packages, data).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# MNIST root: the team's local copy when it is beside the checkout (CI), else ./data, where
# `make data` downloads it (needs the internet once).
SHARED_DATA := $(abspath ../shared/data)
export GANFORGE_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/MNIST/raw/*),$(SHARED_DATA),$(CURDIR)/data)
export BENTOML_DO_NOT_TRACK ?= true
PYTEST_ARGS ?=

.PHONY: install test lint data tools classifier pretrained serve demo up clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,test]'
	@touch $@

data: install
	@$(BIN)/python -c "from pathlib import Path; from trainer.data import has_mnist, load_mnist; \
	p = Path('$(GANFORGE_DATA_DIR)'); p.mkdir(parents=True, exist_ok=True); \
	has_mnist(p) or load_mnist(p, download=True); print('MNIST at', p)"

# Debian's wrk (load tests), prometheus (promtool, the scrape test), chromium (the playground
# test, driven by Playwright) and dataset-fashion-mnist (the real Fashion-MNIST, gz IDX files
# under /usr/share/datasets): installed when missing and we may (root, as on CI).
DEBS := wrk prometheus chromium dataset-fashion-mnist
# checkov (the manifests' policy check) gets a virtualenv of its own: its pins (packaging<24,
# old boto3, networkx) would pull the project's stack back, Celery included.
CHECKOV := .venv-checkov/bin/checkov
$(CHECKOV):
	@test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet 'checkov>=3.3,<4'

tools: $(CHECKOV)
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q $$missing >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null); \
	  else echo "missing Debian packages:$$missing (apt-get install$$missing)"; fi; fi

test: data tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff, mypy, and the layers (import-linter contracts in pyproject.toml)
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Reproduce the evaluator's classifier weights (trainer/assets/mnist_cnn.pt), ~3 min on 2 cores.
classifier: data
	$(BIN)/ganforge classifier --epochs 3 --seed 0

# The whole stack with no server to install: a job trains, its model is served, out/ gets images.
demo: data
	bash deploy/local/demo.sh

# Redis (reachable at GANFORGE_BROKER_URL), a worker and the service in the foreground.
up: data
	bash deploy/local/up.sh

# The HTTP service on :3000 (imports the shipped default model into an empty store).
serve: install
	$(BIN)/ganforge serve --port $${PORT:-3000}

# Reproduce the shipped default model (services/assets/default): the reference recipe, seed 1
# (the best of the recipe's 3 measured seeds), 5-9 min of training on 2 cores with bf16
# (BENCHMARKS.md); then commit what changed there.
pretrained: data
	@mkdir -p runs
	$(BIN)/ganforge train --seed 1 --run-dir runs/pretrained-$$(date +%s) --json > runs/pretrained.json
	$(BIN)/python -c "import json; from services.registry import export_default_model; \
	export_default_model(json.load(open('runs/pretrained.json'))['tag'])"

clean:
	rm -rf $(VENV) .venv-checkov .pytest_cache .mypy_cache .ruff_cache build *.egg-info
