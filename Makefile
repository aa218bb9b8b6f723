# Two entry points, both self-installing: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench install

# deepforest only for the files its wheel ships (data: neon-trees); --no-deps: never imported.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps deepforest==2.1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/scabench run --grid experiments/quick.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/scabench bench-losses
	$(BIN)/scabench simulate bench
	$(BIN)/scabench bench-detector
