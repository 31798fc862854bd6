# CCI — run `make help` for the targets.
SHELL := /bin/bash
export PATH := $(CURDIR)/bin:$(PATH):/usr/local/go/bin
DATA_DIR ?= .cci

.PHONY: help setup build console console-assets console-test up test test-unit test-e2e conformance conformance-storage fmt vet clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: ## install missing Debian packages and Go modules, build bin/cci
	@scripts/setup.sh

build: ## build bin/cci (what scripts/setup.sh builds, without the set-up); builds the console first when npm is there and it is not built
	@$(MAKE) --no-print-directory console-assets
	@go generate ./internal/gateway/crds ./internal/snapshot/crds
	@KUBE_VERSION=$$(go list -m -f '{{.Version}}' k8s.io/kubernetes); \
	go build -ldflags "-X github.com/cci-project/cci/internal/version.Version=$$(git describe --always --dirty 2>/dev/null || echo dev) -X k8s.io/component-base/version.gitVersion=$$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$$(echo $$KUBE_VERSION | cut -d. -f2)" -o bin/cci ./cmd/cci

console: ## build the web console (console/, npm) into internal/console/dist, which the cci binary embeds
	cd console && { [ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund; }
	find internal/console/dist -mindepth 1 ! -name .gitkeep -delete
	cd console && npm run build

# The console's assets are built again when missing or older than a source
# of theirs (a stale build would embed an older app), and only where npm is.
CONSOLE_SOURCES = console/src console/index.html console/package.json console/package-lock.json $(wildcard console/vite.config.*) $(wildcard console/tsconfig*.json)
console-assets:
	@if command -v npm >/dev/null && { [ ! -f internal/console/dist/index.html ] || [ -n "$$(find $(CONSOLE_SOURCES) -newer internal/console/dist/index.html 2>/dev/null | head -1)" ]; }; then \
		$(MAKE) --no-print-directory console; fi

console-test: ## unit tests of the console's front-end logic (vitest)
	cd console && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npx vitest run

up: setup ## set up, then run the control plane and a host agent (data in $(DATA_DIR))
	bin/cci up --data-dir $(DATA_DIR)

# The packages under test/ each run a cluster of their own: one at a time,
# so that a slow machine does not run three clusters on two cores at once.
# Cluster packages whose hosts are network namespaces of their own run beside
# test/e2e, the longest package (each test cluster has slots of its own: pod
# and Service ranges, bridge, hosts range); test/chaos among them, whose
# bench cluster has one such host. Any package whose cluster runs in the
# machine's own network namespace runs after it, one at a time: two
# kube-proxies in one network namespace rewrite each other's chains.
BESIDE_E2E = ./test/console/ ./test/fleet/ ./test/conformance/ ./test/gatewayconformance/ ./test/cells/ ./test/connect/ ./test/chaos/
# The conformance kit (upstream's e2e.test and its tools) is compiled first,
# before any cluster runs: from a cold Go build cache that takes about 10
# minutes of both cores, and compiled beside test/e2e's cluster it slowed
# that package from about 26 minutes to 46.
test: setup ## set up, then run every test (unit and end-to-end; needs root)
	@rc=0; \
	bash test/conformance/build.sh || rc=1; \
	go test -count=1 -timeout 30m $$(go list ./... | grep -v '/test/') || rc=1; \
	go test -count=1 -timeout 60m ./test/e2e/ & e2e=$$!; \
	go test -count=1 -p 1 -timeout 60m $(BESIDE_E2E) || rc=1; \
	wait $$e2e || rc=1; \
	go test -count=1 -p 1 -timeout 60m $$(go list ./test/... | grep -v -e '/test/e2e$$' -e '/test/console$$' -e '/test/fleet$$' -e '/test/conformance$$' -e '/test/gatewayconformance$$' -e '/test/cells$$' -e '/test/connect$$' -e '/test/chaos$$') || rc=1; \
	exit $$rc

test-unit: ## unit and component tests only
	go generate ./internal/gateway/crds ./internal/snapshot/crds
	go test -count=1 $$(go list ./... | grep -v '/test/')

test-e2e: ## end-to-end tests against a real `cci up` (and the console in Chromium)
	go test -count=1 -v -timeout 30m ./test/e2e/ ./test/console/

test-chaos: ## short chaos (3 faults) and churn (500 pods, a fifth under gVisor) against a bench-owned `cci up`; nothing lost, nothing leaked
	go test -count=1 -v -timeout 20m ./test/chaos/

FOCUS ?= \[Conformance\]
SKIP ?= \[Serial\]|\[Disruptive\]
PROCS ?= 12
HOSTS ?=
conformance: setup ## upstream conformance specs on a private cci up: make conformance [FOCUS=re] [SKIP=re] [PROCS=n] [HOSTS=n]
	CCI_CONFORMANCE_FOCUS='$(FOCUS)' CCI_CONFORMANCE_SKIP='$(SKIP)' CCI_CONFORMANCE_PROCS=$(PROCS) CCI_CONFORMANCE_HOSTS=$(HOSTS) \
	CCI_CONFORMANCE_OUT=$(CURDIR)/_output/conformance \
	go test -count=1 -v -timeout 3h -run '^TestConformance$$' ./test/conformance/

STORAGE_FOCUS ?= External.Storage
STORAGE_SKIP ?= \[Slow\]|\[Serial\]|\[Disruptive\]|\[Feature:|\[FeatureGate:|\[Flaky\]
conformance-storage: setup ## upstream External Storage suite on cci-evs: make conformance-storage [STORAGE_FOCUS=re] [STORAGE_SKIP=re] [PROCS=n] [HOSTS=n]
	CCI_STORAGE_FOCUS='$(STORAGE_FOCUS)' CCI_STORAGE_SKIP='$(STORAGE_SKIP)' CCI_STORAGE_PROCS=$(PROCS) CCI_CONFORMANCE_HOSTS=$(HOSTS) \
	CCI_STORAGE_OUT=$(CURDIR)/_output/conformance-storage \
	go test -count=1 -v -timeout 3h -run '^TestStorage$$' ./test/conformance/

fmt: ## gofmt every Go file
	gofmt -w $$(git ls-files '*.go')

vet: ## go vet
	go vet ./...

clean: ## remove build outputs
	rm -rf bin
