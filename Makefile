# mmpc: `make demo` and `make test` each create and fill .venv when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo
PORT   ?= 5000
UI_PORT ?= 5001
PYTEST_ARGS ?=

# No model hub, no telemetry: everything here runs offline.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
# `mlflow models serve --env-manager local` starts uvicorn from PATH: the venv's must come first.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test test-fast serve ui lint clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@# Java 17 runs the Spark engine of `mmpc score` (and its tests); a Debian package.
	@command -v java >/dev/null 2>&1 || { echo "installing Java 17 (openjdk-17-jre-headless) for Spark"; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless; }
	@# nginx is the TLS reverse proxy in front of `mlflow models serve` (the team deployment and its tests).
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { echo "installing nginx (nginx-light)"; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light; }
	@# Chromium, headless, is the browser of the suite's MLflow UI check (driven by Playwright).
	@command -v chromium >/dev/null 2>&1 || { echo "installing Chromium (chromium) for the MLflow UI test"; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/mmpc demo-catalog $(DEMO)/catalog
	$(BIN)/python -m flows retrain --catalog $(DEMO)/catalog --recipe demo --workdir $(DEMO)
	@echo
	@echo "Served next with: make serve   (MLflow UI: make ui)"

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The unit tier for the inner loop: no end-to-end training, no server topology. CI runs `make test`.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check mmpc flows tests bench

serve: $(STAMP)
	set -a && . ./infra/serving/uvicorn.env && set +a && \
	MLFLOW_TRACKING_URI=sqlite:///$(abspath $(DEMO))/mlflow.db \
	$(BIN)/mlflow models serve -m models:/mmpc-ensemble@champion --env-manager local \
		--host 127.0.0.1 --port $(PORT)

# Prints the address of the runs list with every run's test macro-F1 (mmpc's saved view), then serves.
ui: $(STAMP)
	@$(BIN)/mmpc ui-url --workdir $(DEMO) --ui http://127.0.0.1:$(UI_PORT) | sed 's/^/open: /'
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(DEMO))/mlflow.db \
		--host 127.0.0.1 --port $(UI_PORT) --workers 1

clean:
	rm -rf $(DEMO) .pytest_cache
