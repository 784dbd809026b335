# Understudy's build. Every Go target runs in every module listed in go.work.
# `make help` lists the targets; a target's `## ` comment is its help line.

SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

MODULES := $(shell go work edit -json 2>/dev/null | sed -n 's/.*"DiskPath": "\.\/\(.*\)".*/\1/p')
UNIT_MODULES := $(filter-out integration,$(MODULES))
BIN := $(CURDIR)/bin
GOLANGCI_LINT_VERSION := v2.15.0
DEMO_FLAGS ?=

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make <target>\n\nTargets:\n"} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: bootstrap
bootstrap: ## Install what is missing: Java 17, Maven, PostgreSQL server, Node.js, Kafka jars, dashboard assets, Go modules.
	@scripts/bootstrap.sh

.PHONY: bootstrap-test
bootstrap-test: ## bootstrap, plus Debian's Chromium for the dashboard's browser test and MLServer (PyPI) for the integration tests.
	@scripts/bootstrap.sh --browser --mlserver

.PHONY: build
build: ## Build the service binaries and the understudy CLI into bin/.
	@mkdir -p $(BIN)
	@scripts/dashboard-assets.sh
	@for s in tap invoker joiner aggregator; do (cd services/$$s && go build -o $(BIN)/understudy-$$s .) || exit 1; done
	@cd services/understudy && go build -o $(BIN)/understudy .
	@echo "built: $$(ls $(BIN) | grep understudy | tr '\n' ' ')"

.PHONY: test
test: bootstrap-test test-unit test-integration ## Run every test (unit and integration, with -race) on real Kafka and Postgres.

.PHONY: test-unit
test-unit: ## Unit tests of every module (kfake, httptest, throwaway Postgres), with -race.
	@for m in $(UNIT_MODULES); do (cd $$m && go test -race -count=1 ./...) || exit 1; done

.PHONY: test-integration
test-integration: ## End-to-end tests against the real Apache Kafka broker and PostgreSQL.
	@cd integration && go test -race -count=1 -timeout 25m -v ./... 2>&1 | grep -v '^=== ' ; exit $${PIPESTATUS[0]}

.PHONY: fuzz
fuzz: ## Fuzz every decoder for FUZZTIME each (default 30s).
	@cd schemas && for f in $$(go test -list 'Fuzz.*' . | grep ^Fuzz); do go test -run XXX -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-30s} . || exit 1; done
	@cd services/platform && go test -run XXX -fuzz '^FuzzExtract$$' -fuzztime $${FUZZTIME:-30s} ./predict

.PHONY: golden-python
golden-python: ## Prove Python (fastavro) writes byte-identical events to the golden vectors.
	@python3 -c 'import fastavro' 2>/dev/null || python3 -m pip install -q fastavro
	@python3 scripts/check_golden.py

.PHONY: bench-tap
bench-tap: ## Tap latency and CPU vs direct and nginx+mirror, plus Kafka isolation (writes bench-results/tap.md).
	@scripts/bench-tap.sh

.PHONY: bench-invoker
bench-invoker: ## Invoker throughput and memory under a slow shadow on the real broker (writes bench-results/invoker.md).
	@scripts/bench-invoker.sh

.PHONY: bench-joiner
bench-joiner: ## Joiner throughput vs the same join in Kafka Streams, with and without labels, on the real broker (writes bench-results/joiner.md).
	@scripts/bench-joiner.sh

.PHONY: screenshot
screenshot: bootstrap-test ## Refresh docs/dashboard.png: a short demo driven in headless Chromium (the dashboard's browser test).
	@cd services/understudy && UNDERSTUDY_SCREENSHOT=$(CURDIR)/docs/dashboard.png go test -count=1 -run TestDashboardInBrowser .

.PHONY: bench-aggregator
bench-aggregator: ## Aggregator fold rate, PSI/KS time and Postgres rows/min at 5,000 comparisons/s on the real broker (writes bench-results/aggregator.md).
	@scripts/bench-aggregator.sh

.PHONY: bench-decisions
bench-decisions: ## A/A false-FAIL share over 7 days of looks (1,000 runs) vs the previous procedure, and power, through the real decision code (writes bench-results/decisions.md).
	@scripts/bench-decisions.sh

.PHONY: bench
bench: ## Run the Go benchmarks of every module.
	@for m in $(UNIT_MODULES); do (cd $$m && go test -run '^$$' -bench . -benchmem ./...) || exit 1; done

.PHONY: lint
lint: $(BIN)/golangci-lint ## gofmt, go vet and golangci-lint in every module; every metric documented in docs/metrics.md.
	@scripts/check-metrics-doc.sh
	@test -z "$$(gofmt -l $(MODULES))" || { echo "gofmt would change:"; gofmt -l $(MODULES); exit 1; }
	@for m in $(MODULES); do (cd $$m && go vet ./... && $(BIN)/golangci-lint run ./...) || exit 1; done

$(BIN)/golangci-lint:
	@GOBIN=$(BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: tidy
tidy: ## go mod tidy every module; CI fails when this changes anything.
	@for m in $(MODULES); do (cd $$m && go mod tidy) || exit 1; done

.PHONY: check-tidy
check-tidy: tidy ## Fail when go.mod/go.sum or gofmt are not clean.
	@git diff --exit-code -- '*.mod' '*.sum' || { echo "go.mod/go.sum are stale: run 'make tidy' and commit"; exit 1; }
	@test -z "$$(gofmt -l $(MODULES))" || { echo "unformatted files: run 'gofmt -w' on:"; gofmt -l $(MODULES); exit 1; }

.PHONY: demo
demo: bootstrap ## The whole pipeline in one process (embedded Kafka, throwaway Postgres, three demo models, traffic and delayed labels), a report, then the dashboard at http://127.0.0.1:9104/ until Ctrl-C.
	@cd services/understudy && go run . demo --data-dir $(CURDIR)/.demo $(DEMO_FLAGS)

.PHONY: topics
topics: ## Create the topics on KAFKA_BROKERS (e.g. make topics KAFKA_BROKERS=127.0.0.1:9092).
	@cd services/understudy && go run . topics create --kafka.brokers $${KAFKA_BROKERS:?set KAFKA_BROKERS}

.PHONY: kafka-start
kafka-start: ## Start a real single-node Kafka broker in .cache/kafka (prints its address).
	@scripts/kafka.sh start .cache/kafka

.PHONY: kafka-stop
kafka-stop: ## Stop the broker started by kafka-start.
	@scripts/kafka.sh stop .cache/kafka

.PHONY: compose-check
compose-check: ## Validate docker-compose.yml (needs Debian's docker-compose; no Docker engine).
	@command -v docker-compose >/dev/null || scripts/bootstrap.sh --compose
	@docker-compose -f docker-compose.yml config -q && echo "docker-compose.yml is valid"

.PHONY: docs
docs: ## Regenerate docs/configuration.md from the services' flags.
	@scripts/gen-config-docs.sh

.PHONY: clean
clean: ## Remove build output and demo data.
	@rm -rf $(BIN) .demo
