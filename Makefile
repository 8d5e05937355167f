# Two commands do all the set-up on a fresh machine:
#   make train   creates .venv if missing, then trains the seed baseline on RAVDESS
#   make test    creates .venv if missing, then runs the whole test suite (what CI runs)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export SER_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: venv train test lint cv bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

train: venv
	$(PY) train.py $(ARGS)

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest $(ARGS)

lint: venv
	$(PY) -m ruff check .

# all six speaker-independent folds of the baseline, then the mean ± std table
cv: venv
	$(PY) train.py -m experiment=baseline_ravdess data.fold=1,2,3,4,5,6 $(ARGS)

bench: venv
	$(PY) benchmarks/featurise.py

clean:
	rm -rf $(VENV) .cache outputs/*/
