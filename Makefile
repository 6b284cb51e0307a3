# The README's two commands: `make demo` (set up + run the main job) and `make test` (set up + tests).
# Both create .venv and install everything on a fresh machine. torch is installed first with an exact
# pin so pip takes the local CPU wheel instead of a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORK ?= .recsys/demo
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/recsys data synth --out $(WORK)/data --interactions 20000 --seed 0
	$(BIN)/recsys data validate --path $(WORK)/data
	$(BIN)/recsys data split --data $(WORK)/data --out $(WORK)/split
	$(BIN)/recsys baselines --split $(WORK)/split --out $(WORK)/baselines
	$(BIN)/recsys train-encoder --data $(WORK)/data --split $(WORK)/split --out $(WORK)/encoder \
		--method lora --tower text --steps 30 --eval-every 15 --history-tokens 64 --alias champion
	$(BIN)/recsys ab --split $(WORK)/split --a itemknn --b $(WORK)/encoder/topk_test.parquet --out $(WORK)/ab
	$(BIN)/recsys embed --data $(WORK)/data --encoder champion --store $(WORK)/store
	@echo "demo done: reports in $(WORK)/ab/report.md; MLflow UI: $(BIN)/mlflow ui --backend-store-uri sqlite:///$$PWD/.recsys/mlflow.db"

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .recsys .pytest_cache
