# clip-operator developer targets. `make help` lists them.
SHELL := /bin/bash
# The project virtualenv (hack/setup.sh makes it): python3, pytest, ruff and mypy come from it.
export PATH := $(CURDIR)/.venv/bin:$(PATH)
PYTEST ?= python3 -m pytest
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

deps: ## install the Debian packages the tests, demo and images need (only the missing ones; hack/deps.sh)
	hack/deps.sh --images

setup: ## Python packages (.venv), Go binaries, images (cached); runs `make deps` only when a package is missing
	hack/setup.sh --images

lint: ## ruff check, ruff format --check, mypy
	ruff check .
	ruff format --check .
	mypy

test: setup ## THE test command: setup, lint, unit, integration and fault tiers on their own cluster (e2e: make e2e)
	$(MAKE) lint
	. hack/test-env.sh && $(PYTEST) tests $(PYTEST_ARGS)

e2e: ## e2e tier on a real node: images, a fresh test cluster with a node (a running demo is stopped first: one node per machine), tests/e2e
	. hack/test-env.sh && hack/cluster down >/dev/null 2>&1 || true
	hack/stop-demo-node.sh
	hack/images.sh
	. hack/test-env.sh && hack/cluster up --with-node
	. hack/test-env.sh && $(PYTEST) tests/e2e -rs $(PYTEST_ARGS)

e2e-kind: ## e2e tier on kind, offline: binaries + node image (cached), pytest-kind creates the cluster, loads the images, deletes it (docs/kind.md)
	python3 -c 'import pytest_kind' 2>/dev/null || python3 -m pip install -q -e '.[kind]'
	hack/images.sh
	hack/kind build
	$(PYTEST) tests/e2e -rs --cluster-backend=kind $(PYTEST_ARGS)

test-unit: ## unit tests only (no infrastructure)
	$(PYTEST) tests/unit $(PYTEST_ARGS)

test-integration: setup ## control plane, S3, FFmpeg tiers
	. hack/test-env.sh && $(PYTEST) tests/integration $(PYTEST_ARGS)

cluster-up: ## start the local control plane (.cluster/kubeconfig)
	hack/cluster up

cluster-down: ## stop it and remove its state
	hack/cluster down

s3-up: ## start the local S3 server (versitygw) on 127.0.0.1:7070
	hack/s3.sh start

s3-down: ## stop it
	hack/s3.sh stop

images: ## build the job and operator images with a local Docker daemon
	hack/setup.sh --images

helm: ## build helm from the Go module proxy (cached)
	hack/helm.sh

chart-sync: ## copy crds/ and dashboards/ into charts/clip-operator/files (tests fail on drift)
	hack/helm.sh sync

chart-test: ## chart lint/render, Argo CD health, chart on the local control plane
	$(PYTEST) tests/unit/test_chart.py tests/unit/test_argocd_health.py tests/integration/test_chart.py $(PYTEST_ARGS)

bench-operator: ## operator scale benchmark (see bench/RESULTS.md)
	python3 -m bench.operator.run --burst 100 --burst 1000 --burst 5000 --steady 50:60

demo: ## the quick start: a real clip, end to end, on the local cluster
	hack/demo

demo-down: ## tear the demo down
	hack/demo down

.PHONY: help deps setup lint test e2e e2e-kind test-unit test-integration cluster-up cluster-down s3-up s3-down images helm chart-sync chart-test bench-operator demo demo-down
