# The two commands of the README. Each creates .venv and installs the project into it when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg

.PHONY: course course-model test lint notebooks clean chromium cityscapes rehearse-r101 exercises gpu-wheels lock

# requirements.lock pins every package to the version the committed outputs were made with (a constraints file:
# pyproject.toml keeps the library's ranges); `make lock` rewrites it from the installed environment.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

## the main job: every notebook headless with papermill into runs/<timestamp>/
course: $(STAMP)
	$(PY) -m anncore course

## retrain the shipped course model (models/course/): the ann head with params/course_model.yaml, ~3-4 min on a CPU
course-model: $(STAMP)
	rm -f runs/course_model/checkpoint.pt
	$(PY) -m anncore train --config params/course_model.yaml
	rm -f models/course/cue.json
	$(PY) -m anncore export --checkpoint runs/course_model/checkpoint.pt --out models/course --overwrite
	$(PY) -m anncore cue --checkpoint models/course/model.pt --json models/course/cue.json

## Debian's chromium for the JupyterLab browser test (best effort: the test skips, saying why, without it)
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: Debian chromium could not be installed; tests/test_browser.py will skip"

## wheels of gpu-check's notebooks step, for a CUDA machine without network or the course extra, into .gpu-wheels/
## (git-ignored; best effort); copy the checkout with .gpu-wheels/ to that machine and run there:
##   ANNCORE_WHEELS=.gpu-wheels bash benchmarks/gpu_check.sh --out DIR
gpu-wheels:
	-$(PY) -m pip download --only-binary=:all: --dest .gpu-wheels papermill nbclient ipykernel nbformat

## the full recipe on real Cityscapes (a GPU machine): notebooks 07-08 with params/cityscapes/; resumable
cityscapes: $(STAMP)
	@test -n "$(CITYSCAPES_DATASET)" || { echo "usage: make cityscapes CITYSCAPES_DATASET=/path/to/cityscapes"; exit 2; }
	CITYSCAPES_DATASET=$(abspath $(CITYSCAPES_DATASET)) $(PY) -m anncore course --params params/cityscapes --only 07 08

## the full-size path (tests/test_full_size.py: 1024x2048 frames, the official recipe, make cityscapes' notebooks,
## torchrun with a resume, the three evaluation presets) with ResNet-101 instead of CI's small backbone; CPU is enough
rehearse-r101: $(STAMP)
	ANNCORE_FULL_SIZE_BACKBONE=resnet101 $(PY) -m pytest tests/test_full_size.py -v --durations=0

## ruff, the unit tests, and every notebook re-executed against its committed outputs (nbval)
test: $(STAMP) chromium
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest tests notebooks $(NBVAL)

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

## blank copies of the notebooks in exercises/ (git-ignored) to work the exercises in; a copy already there is kept
exercises: $(STAMP)
	$(PY) -m anncore exercises --out exercises

## re-execute the notebooks in place (CPU defaults) and strip their metadata; commit the result
notebooks: $(STAMP)
	$(PY) -m anncore course --in-place

## rewrite requirements.lock from .venv (after changing pyproject.toml or upgrading a package; then run make test)
lock:
	test -x $(PY) || { echo "make lock: no $(VENV); run make test first"; exit 2; }
	{ echo "# Every package version the committed notebook outputs and results were made with (pip freeze of .venv)."; \
	  echo "# make installs with it as a constraints file (pip install -c requirements.lock); make lock rewrites it."; \
	  $(PY) -m pip freeze --exclude-editable | grep -v -i '^anncore[= @]'; } > requirements.lock

clean:
	rm -rf runs .pytest_cache .ruff_cache .hypothesis
