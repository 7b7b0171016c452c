# STYX. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
PKGS := ./...
APT_PACKAGES := libloc-database location protobuf-compiler tinyproxy microsocks dante-server wrk chromium
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.7.0
TEST_TIMEOUT ?= 30m
BENCH_MODEL := $(CURDIR)/.bench/raven-model
DOCKER ?= docker
IMAGE_TAG ?= dev
IMAGE_ROLES := etcd nats scheduler worker node pki
MUTATION_PKGS := scheduler/internal/ledger scheduler/internal/pool scheduler/internal/dispatch pkg/recent pkg/authlimit pkg/pki

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-10s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## install the system packages STYX needs (idempotent)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

.PHONY: build
build: ## build every binary into bin/ (static, CGO_ENABLED=0)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./scheduler/cmd/styx-scheduler ./worker/cmd/styx-worker ./clusternode/cmd/styx-node ./trainer/cmd/styx-trainer ./deploy/dev/cmd/styx-dev ./deploy/nats/cmd/styx-nats ./deploy/pki/cmd/styx-pki

.PHONY: images
images: ## build the FROM scratch images styx-{etcd,nats,scheduler,worker,node,pki}:IMAGE_TAG (default dev) for deploy/
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./scheduler/cmd/styx-scheduler ./worker/cmd/styx-worker ./clusternode/cmd/styx-node ./deploy/etcd/cmd/styx-etcd ./deploy/nats/cmd/styx-nats ./deploy/pki/cmd/styx-pki
	@rm -rf $(BIN)/image && mkdir -p $(BIN)/image/empty
	@for r in $(IMAGE_ROLES); do ln -f $(BIN)/styx-$$r $(BIN)/image/styx-$$r; done
	@for r in $(IMAGE_ROLES); do \
		echo "image styx-$$r:$(IMAGE_TAG)"; \
		out="$$(DOCKER_BUILDKIT=0 $(DOCKER) build -q -f deploy/compose/Dockerfile --target $$r -t styx-$$r:$(IMAGE_TAG) $(BIN)/image 2>&1)" || { echo "$$out"; exit 1; }; \
	done
	@rm -rf $(BIN)/image

.PHONY: e2e
e2e: deps ## end-to-end test of the compose deployment (needs a Docker engine; builds its own images)
	STYX_E2E=1 $(GO) test -count 1 -v -timeout 20m -run '^TestCompose$$' ./deploy/compose/

.PHONY: run
run: deps build ## run an all-in-one cluster: embedded etcd and JetStream, a scheduler, two workers, a node (STYX_NODES=N: N) and a load generator
	$(BIN)/styx-dev --bin $(BIN)

.PHONY: test
test: deps ## run every test with the race detector (screenshots of browser tests go to artifacts/)
	STYX_REQUIRE_BROWSER=1 STYX_ARTIFACT_DIR=$(CURDIR)/artifacts $(GO) test -race -timeout $(TEST_TIMEOUT) $(PKGS)

.PHONY: bench
bench: deps build ## run the benchmarks and print figures (trains the models it needs into .bench/ once)
	$(GO) test -run '^$$' -bench . -benchtime 2s ./pkg/locdb/
	@test -f $(BENCH_MODEL)/model.json || $(BIN)/styx-trainer train --out-dir $(BENCH_MODEL) --model-version bench-s2 --progress lines
	@test -f $(BENCH_MODEL)-s1/model.json || $(BIN)/styx-trainer train --schema 1 --out-dir $(BENCH_MODEL)-s1 --model-version bench-s1 --progress lines
	STYX_RAVEN_MODEL=$(BENCH_MODEL)-s1/model.json STYX_RAVEN_MODEL2=$(BENCH_MODEL)/model.json $(GO) test -run '^$$' -bench 'ModelEngineReal/Examine' -benchtime 2s -cpu 1 ./pkg/raven/
	STYX_BENCH_MODEL=$(BENCH_MODEL)/model.json $(GO) test -run '^$$' -bench . -benchtime 1x ./integration/

.PHONY: proto
proto: deps ## regenerate the protobuf code (committed)
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	PATH=$(BIN):$$PATH protoc -I proto --go_out=paths=source_relative:proto --go-grpc_out=paths=source_relative:proto proto/styx/v1/styx.proto

.PHONY: check
check: deps ## vet, gofmt, staticcheck, generated code up to date, and mutation testing
	$(GO) vet $(PKGS)
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run $(STATICCHECK) $(PKGS)
	@$(MAKE) -s proto
	@git diff --exit-code -- proto || { echo "generated protobuf code differs from proto/: run make proto and commit"; exit 1; }
	@$(MAKE) -s mutation

.PHONY: mutation
mutation: ## mutation-test the pure scheduler packages: test efficacy and mutator coverage over 90% (.gremlins.yaml)
	@failed=""; for p in $(MUTATION_PKGS); do \
		echo "mutation $$p"; start=$$SECONDS; \
		out="$$(cd $$p && GOFLAGS="$$GOFLAGS -count=1" NO_COLOR=1 $(GO) tool gremlins unleash --config $(CURDIR)/.gremlins.yaml --output-statuses lct 2>&1)"; rc=$$?; \
		case $$rc in \
		0) echo "$$out" | grep -E '^(Killed|Timed out|Test efficacy|Mutator coverage):' | sed 's/^/  /' ;; \
		10|11) echo "$$out" | grep -vE '^(Starting|Gathering coverage)' | sed 's/^/  /'; failed="$$failed $$p" ;; \
		*) echo "$$out" | sed 's/^/  /'; echo "  gremlins failed (exit $$rc)"; failed="$$failed $$p" ;; \
		esac; \
		echo "  took $$((SECONDS - start))s"; \
	done; \
	if [ -n "$$failed" ]; then echo "mutation testing failed (efficacy and mutator coverage must be over 90%):$$failed"; exit 1; fi

.PHONY: clean
clean: ## remove build output
	rm -rf $(BIN)
