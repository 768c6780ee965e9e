# Every target installs into its own virtual environment first, so a fresh
# clone needs nothing but Python 3.11+ and this file.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The PyTorch build to install; override for another CUDA/CPU build, e.g.
#   make test TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install demo test test-fast bench bench-gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH_SPEC)
	$(PY) -c "import torch, torchvision"
	$(PIP) -e '.[dev]'
	$(PY) -c "import iwu, cc3d"
	touch $(STAMP)

demo: install
	$(VENV)/bin/iwu demo

test: install
	$(PY) -m pytest -q

# The quick loop while editing: the suite without its slow end-to-end tests (CI runs them all).
test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/instance_masks.py
	$(PY) benchmarks/data_loading.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/mobilenet_padding.py

# What only a GPU can show (benchmarks/gpu_suite.py); without CUDA it says so and exits 0.
bench-gpu: install
	$(PY) benchmarks/gpu_suite.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
