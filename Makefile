# Two commands do all the set-up on a fresh machine:
#   make train   creates .venv if missing, then trains the best single-clip CPU recipe
#                (experiment=stats_ravdess) on RAVDESS fold 1 and prints its summary;
#                the seed baseline: make train ARGS=experiment=baseline_ravdess
#   make test    creates .venv if missing, then runs the whole test suite (what CI runs)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export SER_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: venv train test lint cv bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,keras]"
	touch $@

venv: $(VENV)/.installed

train: venv
	$(VENV)/bin/ser-train $(ARGS)

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest $(ARGS)

lint: venv
	$(PY) -m ruff check .

# all six speaker-independent folds of the baseline, two at a time on one thread each
# (faster than one at a time on two threads on a 2-core machine), then the mean ± std table.
# CV_JOBS=1 runs them one after another: for recipes whose featurisation dominates
# (stats_*), the first fold then computes every clip once with both cores.
CV_EXPERIMENT ?= baseline_ravdess
CV_JOBS ?= 2
cv: venv
	$(VENV)/bin/ser-train -m experiment=$(CV_EXPERIMENT) data.fold=1,2,3,4,5,6 \
		hydra/launcher=joblib hydra.launcher.n_jobs=$(CV_JOBS) num_threads=1 \
		hydra.sweep.dir=outputs/cv/$(CV_EXPERIMENT) $(ARGS)
	$(PY) -m ser.evaluation.aggregate outputs/cv/$(CV_EXPERIMENT)

bench: venv
	$(PY) benchmarks/featurise.py --data-dir $(SER_DATA_DIR)/ravdess
	$(PY) benchmarks/cnn_step.py

clean:
	rm -rf $(VENV) .cache outputs/*/
