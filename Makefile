# Set-up lives here: `make demo` and `make test` create .venv, install torch first, then the project.
PYTHON ?= python3
VENV ?= .venv
# GPU users: make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" demo
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The storage tests' private PostgreSQL server (.ci/postgres.sh); its URL is read from $(PG_DIR)/url.
PG_DIR ?= $(or $(TMPDIR),/tmp)/shrink-ci-pg-$(shell id -u)
# The Slurm tests' private one-node cluster (.ci/slurm.sh); its SLURM_CONF is read from $(SLURM_DIR)/env.
SLURM_DIR ?= $(or $(TMPDIR),/tmp)/shrink-ci-slurm-$(shell id -u)

.PHONY: demo test test-fast lint bench clean postgres postgres-stop chromium slurm slurm-stop

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shrink demo

test: $(STAMP) postgres chromium slurm
	$(BIN)/ruff check .
	SHRINK_PG_DIR=$(PG_DIR) SHRINK_SLURM_DIR=$(SLURM_DIR) \
	SHRINK_TEST_POSTGRES_URL="$${SHRINK_TEST_POSTGRES_URL:-$$(cat $(PG_DIR)/url 2>/dev/null)}" \
	$(BIN)/pytest $(PYTEST_ARGS)

# Daily work: `make test` without the tests marked slow (CI runs `make test`).
test-fast:
	$(MAKE) test PYTEST_ARGS='-m "not slow" $(PYTEST_ARGS)'

# Installs Debian's postgresql when missing (root + apt-get only) and starts or reuses the test server.
postgres:
	PG_DIR=$(PG_DIR) PYTHON=$(PYTHON) bash .ci/postgres.sh

postgres-stop:
	PG_DIR=$(PG_DIR) bash .ci/postgres.sh stop

# Installs Debian's slurm-wlm and munge when missing (root + apt-get only) and starts or reuses a one-node
# cluster of its own (munged, slurmctld, slurmd) for tests/test_slurm.py; not root: the Slurm tests skip.
slurm:
	SLURM_DIR=$(SLURM_DIR) PYTHON=$(PYTHON) bash .ci/slurm.sh

slurm-stop:
	SLURM_DIR=$(SLURM_DIR) bash .ci/slurm.sh stop

# Installs Debian's chromium and chromium-driver when missing (root + apt-get only): the report's browser test.
chromium:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends chromium chromium-driver; \
	else echo "chromium is missing (needs root + apt-get to install): the browser test will skip"; fi

bench: $(STAMP)
	$(BIN)/python benchmarks/step_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache
