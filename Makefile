# Every target works from a fresh clone: it creates .venv itself and never
# touches the system Python.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
BENCH_MLFLOW := bench/.venv-mlflow
BENCH_DVC    := bench/.venv-dvc

.PHONY: demo test lint bench clean chromium

$(VENV)/.installed-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-demo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[openai]'
	touch $(VENV)/.installed-base $@

$(VENV)/.installed-dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev]'
	touch $(VENV)/.installed-base $(VENV)/.installed-demo $@

demo: $(VENV)/.installed-demo
	$(PY) examples/quickstart.py
	$(PY) examples/evaluate.py

# The web UI tests drive Debian's chromium (Playwright's own download does not work here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium could not be installed: the browser tests will fail"

test: $(VENV)/.installed-dev chromium
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy src
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy src

$(BENCH_MLFLOW)/.installed:
	$(PYTHON) -m venv $(BENCH_MLFLOW)
	$(BENCH_MLFLOW)/bin/python -m pip --disable-pip-version-check -q install 'mlflow==3.17.2'
	touch $@

$(BENCH_DVC)/.installed:
	$(PYTHON) -m venv $(BENCH_DVC)
	$(BENCH_DVC)/bin/python -m pip --disable-pip-version-check -q install 'dvc==3.67.1'
	touch $@

bench: $(VENV)/.installed-dev $(BENCH_MLFLOW)/.installed $(BENCH_DVC)/.installed
	$(PY) bench/tracking.py --mlflow-python $(BENCH_MLFLOW)/bin/python
	$(PY) bench/prompts.py --mlflow-python $(BENCH_MLFLOW)/bin/python
	$(PY) bench/models.py --mlflow-python $(BENCH_MLFLOW)/bin/python
	$(PY) bench/kb.py
	$(PY) bench/conversations.py
	$(PY) bench/delivery.py
	$(PY) bench/data.py --dvc-python $(BENCH_DVC)/bin/python
	$(PY) bench/llm.py
	$(PY) bench/eval.py
	$(PY) bench/config.py
	$(PY) bench/flags.py
	$(PY) bench/server.py --mlflow-python $(BENCH_MLFLOW)/bin/python
	$(PY) bench/mlflow_compat.py --mlflow-python $(BENCH_MLFLOW)/bin/python
	$(PY) bench/traces.py --mlflow-python $(BENCH_MLFLOW)/bin/python
	$(PY) bench/gc.py
	$(PY) bench/erase.py --mlflow-python $(BENCH_MLFLOW)/bin/python
	$(PY) bench/cli.py --mlflow-python $(BENCH_MLFLOW)/bin/python --dvc-python $(BENCH_DVC)/bin/python

clean:
	rm -rf $(VENV) $(BENCH_MLFLOW) $(BENCH_DVC) .test-servers .test-artifacts
