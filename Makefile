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

.PHONY: install demo test test-fast test-slurm bench bench-gpu gpu-wheels clean

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

# The real-scheduler tests are make test-slurm's, even where a cluster happens to be up. One worker per
# core (pytest-xdist), a test file to a worker: a file's tests share the runs its fixtures train.
test: install
	$(PY) -m pytest -q -n auto --dist loadfile -m "not slurm"

# The quick loop while editing: the suite without its slow end-to-end tests (CI runs them all).
test-fast: install
	$(PY) -m pytest -q -n auto --dist loadfile -m "not slow"

# The sweep, requeue and DDP on a real scheduler: a single-node SLURM cluster on this machine
# (scripts/slurm/start_cluster.sh: root and apt-get; elsewhere it says why in one line and this exits 0),
# stopped again after the tests, passed or not.
test-slurm: install
	@status=0; scripts/slurm/start_cluster.sh || status=$$?; \
	if [ $$status -eq 3 ]; then exit 0; elif [ $$status -ne 0 ]; then exit $$status; fi; \
	trap 'scripts/slurm/stop_cluster.sh; exit 130' INT TERM; \
	status=0; $(PY) -m pytest -q -m slurm tests/test_slurm_cluster.py || status=$$?; \
	scripts/slurm/stop_cluster.sh; exit $$status

bench: install
	$(PY) benchmarks/instance_masks.py
	$(PY) benchmarks/data_loading.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/mobilenet_padding.py

# What only a GPU can show (benchmarks/gpu_suite.py); without CUDA it says so and exits 0.
bench-gpu: install
	$(PY) benchmarks/gpu_suite.py

# The wheels a GPU day needs and the lent GPU machine lacks, into gpu_wheels/ (benchmarks/gpu_day.py)
gpu-wheels: install
	$(PY) benchmarks/gpu_day.py fetch

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
