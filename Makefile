# Streaming lakehouse for data-center server monitoring. `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done

.PHONY: help setup stream test bench lint clean

help: ## list the targets, in the order data flows
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: $(STAMP) ## install what is missing: system packages, .venv, pinned Python packages (idempotent)

$(STAMP): pyproject.toml constraints.txt package.json package-lock.json scripts/setup.sh
	bash scripts/setup.sh
	@touch $@

stream: setup ## start the stack and everything on it, in the foreground; Ctrl-C stops it all
	$(BIN)/lakehouse up

test: setup ## run every test; integration tests start their own stack on free ports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup ## run the benchmarks and write docs/benchmarks.md (QUICK=1 for the short run)
	$(BIN)/lakehouse bench $(if $(QUICK),--quick)

lint: setup ## static checks (ruff)
	$(BIN)/ruff check .

clean: ## stop the local stack and delete its state (var/)
	-@[ -x $(BIN)/lakehouse ] && $(BIN)/lakehouse stack down
	rm -rf var
