# chaosmirror: `make demo` sets everything up and runs the main job offline; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian/Ubuntu packages the tests, the demo and the benchmark use.
APT_PACKAGES := skopeo docker-registry apache2-utils openssl docker.io containerd iproute2 util-linux zstd
TOOLS := skopeo docker-registry htpasswd openssl dockerd docker containerd ctr ip setpriv zstd
SUDO := $(shell [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null && echo sudo)

.PHONY: setup system-packages demo test lint bench clean

setup: system-packages $(VENV)/.installed

system-packages:
	@missing=""; for tool in $(TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "missing:$$missing -- install skopeo, the distribution registry (docker-registry), htpasswd and openssl with your package manager" >&2; exit 1; \
	  fi; \
	  echo "installing$$missing (apt packages: $(APT_PACKAGES))"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

demo: setup
	$(PY) -m lab.demo

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check chaosmirror lab tests
	$(VENV)/bin/ruff format --check chaosmirror lab tests
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m lab.bench

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
