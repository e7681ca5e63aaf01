# imgbuild: `make demo` builds the example OS and a bootable qcow2 from it and boots it;
# `make test` runs the whole test suite. Both install what they need first (Debian packages, the venv).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
IMGBUILD := $(VENV)/bin/imgbuild
PYTEST_ARGS ?=

.PHONY: setup test unit lint demo clean container

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/debian-packages.txt scripts/install-host-packages
	scripts/install-host-packages
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

unit: setup
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

demo: setup
	scripts/demo

# The imgbuild container image (built from Debian packages, cached in .cache/container by its inputs),
# loaded into containers-storage as localhost/imgbuild:latest. See docs/ci.md.
container: setup
	$(PY) -m builder.container_image --load

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
