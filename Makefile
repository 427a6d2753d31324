# The two commands of the README. Each creates .venv and installs the project into it when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg

.PHONY: course test lint notebooks clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## the main job: every notebook headless with papermill into runs/<timestamp>/
course: $(STAMP)
	$(PY) -m anncore course

## ruff, the unit tests, and every notebook re-executed against its committed outputs (nbval)
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest tests notebooks $(NBVAL)

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

## re-execute the notebooks in place (CPU defaults) and strip their metadata; commit the result
notebooks: $(STAMP)
	$(PY) -m anncore course --in-place

clean:
	rm -rf runs .pytest_cache .ruff_cache .hypothesis
