# Two commands: `make demo` (set up, then run the demo) and `make test` (set up, then run the tests).
# Each creates or reuses .venv and installs the pinned CPU torch before advlab, so pip never pulls a
# CUDA build here; advlab itself accepts any torch 2.x a GPU user has.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.advlab-installed

.PHONY: demo test lint setup browser clean gpu-smoke

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	# timm without its torchvision dependency: no torchvision build matches the pinned torch, and building a
	# model needs none of it (advlab stands in for the names timm imports; docs/models.md)
	$(BIN)/python -m pip install -q --no-deps 'timm>=1.0,<1.1'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/advlab demo

# Headless Chromium for the report test (Debian's package; needs root or sudo on a fresh machine).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

test: $(STAMP) browser lint gpu-smoke
	ADVLAB_DATA=$${ADVLAB_DATA:-$(CURDIR)/../shared/data} $(BIN)/pytest -q

# Every run of bench/gpu.sh end to end at a tiny size on the CPU, so the GPU scripts stay runnable.
gpu-smoke: $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	for run in speed fast fast-carry pgd smoothing backdoor; do \
	  SMOKE=1 DEVICE=cpu PYTHON=$(BIN)/python ADVLAB_CACHE=$$tmp/cache \
	    bash bench/gpu.sh $$run $$tmp/out $${ADVLAB_DATA:-$(CURDIR)/../shared/data} 900 || exit 1; \
	done; echo "gpu-smoke: every run of bench/gpu.sh completed"

clean:
	rm -rf $(VENV) runs .pytest_cache
