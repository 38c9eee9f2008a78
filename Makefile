# One virtual environment for development and tests; each image installs only its own packages.
PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
VERSION  := $(shell cat VERSION)
RUNTIMES := $(patsubst %/,%,$(dir $(wildcard runtimes/*/pyproject.toml)))
TEST_REQUIREMENTS := $(wildcard tests/*/requirements.txt)
PORT     ?= 8080

.PHONY: help setup serve test bench soak set-version clean

help:
	@echo "make serve   - serve the example iris model on :$(PORT)"
	@echo "make test    - run the test suite"
	@echo "make bench   - load-test the example model (req/s, p50/p99)"
	@echo "make soak    - mixed traffic for SOAK_SECONDS (300), checking errors and memory"

setup: $(VENV)/.setup-done

# Editable installs of every package, the test requirements of every suite, then each suite's
# setup script for what pip cannot install (storage emulators, ...).
$(VENV)/.setup-done: VERSION storage/pyproject.toml $(addsuffix /pyproject.toml,$(RUNTIMES)) \
		requirements-dev.txt $(TEST_REQUIREMENTS) $(wildcard tests/*/setup.sh)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt $(addprefix -r ,$(TEST_REQUIREMENTS)) \
		-e 'storage[all]' $(addprefix -e ,$(RUNTIMES))
	for script in $(wildcard tests/*/setup.sh); do bash $$script || exit 1; done
	touch $@

serve: setup
	@echo "Serving examples/sklearn-iris as 'iris' on :$(PORT). Try:"
	@echo "  curl -s localhost:$(PORT)/v1/models/iris:predict -d '{\"instances\": [[6.8, 2.8, 4.8, 1.4]]}'"
	$(PY) -m sklearnserver --model_name iris --model_dir examples/sklearn-iris --http_port $(PORT)

test: setup
	$(PY) -m pytest tests

bench: setup
	$(PY) benchmarks/bench.py

# Mixed valid and invalid traffic for SOAK_SECONDS, with the server's memory sampled.
soak: setup
	$(PY) benchmarks/soak.py --seconds $(or $(SOAK_SECONDS),300)

# Regenerates the gRPC modules beside modelserver/protocol/proto/grpc_service.proto (grpcio-tools, from
# `make setup`), into PROTO_OUT. The messages load into a descriptor pool of their own, so
# tritonclient or the KServe SDK, which declare the same `inference.*` names, can share a process.
PROTO_OUT ?= runtimes/modelserver
.PHONY: proto
proto:
	$(PY) -m grpc_tools.protoc -I runtimes/modelserver --python_out=$(PROTO_OUT) \
		--pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		runtimes/modelserver/modelserver/protocol/proto/grpc_service.proto
	sed -i 's/_descriptor_pool\.Default()\.AddSerializedFile(/_descriptor_pool.DescriptorPool().AddSerializedFile(/' \
		$(PROTO_OUT)/modelserver/protocol/proto/grpc_service_pb2.py

# Writes VERSION into every package's pyproject.toml: `make set-version VERSION=0.2.0`.
set-version:
	echo $(VERSION) > VERSION
	sed -i 's/^version = "[^"]*"/version = "$(VERSION)"/' storage/pyproject.toml \
		$(addsuffix /pyproject.toml,$(RUNTIMES))
	$(MAKE) generate

clean:
	rm -rf $(VENV) .pytest_cache

# ---- Images and Kubernetes -------------------------------------------------------------------
# docker/images.txt lists the images. `make generate` writes Dockerfile.* and manifests/ from it
# and VERSION. `make build-all` builds every image whose package exists, as
# $(REGISTRY)/<image>:$(VERSION); `make build-<image> FRAMEWORK_VERSION=x` a variant tagged
# $(VERSION)-x ("+" made "-"). Builds get this machine's pip configuration (docker/pipconf.py).
# CONTAINER_TOOL=podman works the same (README: Images and Kubernetes).
CONTAINER_TOOL    ?= docker
REGISTRY          ?= localhost/modelserver
FRAMEWORK_VERSION ?=
BUILD_ARGS        ?=
IMAGE_TABLE       := docker/images.txt
IMAGES            := $(shell awk '!/^\#/ && NF {print $$1}' $(IMAGE_TABLE))
BUILDABLE_IMAGES  := $(shell awk '!/^\#/ && NF {print $$1, $$3}' $(IMAGE_TABLE) | \
                       while read image dir; do test -f $$dir/pyproject.toml && echo $$image; done)
REVISION          ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE_SOURCE      ?= $(shell git config --get remote.origin.url 2>/dev/null | sed -E 's|://[^/@]*@|://|')
# Where docker/pipconf.py writes the pip.conf that builds get as a secret.
PIP_CONF_DIR      ?= .cache/pipconf
# $(call image_field,IMAGE,N): column N of the image's line in docker/images.txt.
image_field = $(shell awk '$$1 == "$(1)" {print $$$(2)}' $(IMAGE_TABLE))
has_framework = $(filter-out -,$(call image_field,$(1),4))
framework_version = $(if $(and $(FRAMEWORK_VERSION),$(call has_framework,$(1))),$(FRAMEWORK_VERSION))
image_ref = $(REGISTRY)/$(1):$(shell $(PYTHON) manifests/generate.py --tag '$(VERSION)' '$(call framework_version,$(1))')

.PHONY: generate manifests build-all push-all lint-images test-images print-images \
	$(addprefix build-,$(IMAGES)) $(addprefix push-,$(IMAGES))

generate manifests:
	$(PYTHON) manifests/generate.py --registry $(REGISTRY)

build-all: $(addprefix build-,$(BUILDABLE_IMAGES))
	@$(foreach i,$(filter-out $(BUILDABLE_IMAGES),$(IMAGES)),echo "skipped $(i): $(call image_field,$(i),3) does not exist";)

push-all: $(addprefix push-,$(BUILDABLE_IMAGES))

$(addprefix build-,$(IMAGES)): build-%:
	@test -f $(call image_field,$*,3)/pyproject.toml || \
		{ echo "$*: $(call image_field,$*,3)/pyproject.toml does not exist"; exit 1; }
	$(CONTAINER_TOOL) build -f $(call image_field,$*,2) -t $(call image_ref,$*) \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		--build-arg SOURCE='$(IMAGE_SOURCE)' \
		$(if $(call framework_version,$*),--build-arg FRAMEWORK_VERSION=$(FRAMEWORK_VERSION)) \
		$$($(PYTHON) docker/pipconf.py $(CONTAINER_TOOL) $(PIP_CONF_DIR)) \
		$(BUILD_ARGS) .

$(addprefix push-,$(IMAGES)): push-%:
	$(CONTAINER_TOOL) push $(call image_ref,$*)

print-images:
	@echo "images: $(IMAGES)"
	@echo "buildable: $(BUILDABLE_IMAGES)"
	@echo "registry: $(REGISTRY)"
	@echo "version: $(VERSION)"

lint-images: setup
	$(VENV)/bin/hadolint Dockerfile.*
	$(PYTHON) manifests/generate.py --check

# Builds the images whose package exists (or IMAGES_TO_TEST="sklearnserver ...") and runs each
# as KServe would, against a real S3 server. Without a Docker engine:
# ../shared/tools/setup-containers, then CONTAINER_TOOL=podman.
IMAGES_TO_TEST ?= $(BUILDABLE_IMAGES)
test-images: setup
	@$(CONTAINER_TOOL) info >/dev/null 2>&1 || { echo "$(CONTAINER_TOOL) cannot run containers" \
		"here; where no Docker engine runs, use podman (README: Testing the images)"; exit 1; }
	$(MAKE) $(addprefix build-,$(IMAGES_TO_TEST)) CONTAINER_TOOL=$(CONTAINER_TOOL) REGISTRY=$(REGISTRY)
	TEST_IMAGES=1 IMAGES_TO_TEST="$(IMAGES_TO_TEST)" CONTAINER_TOOL=$(CONTAINER_TOOL) \
		REGISTRY=$(REGISTRY) $(PY) -m pytest tests/images

# ---- Peers -------------------------------------------------------------------------------------
# Ours next to MLServer 1.7.1 and KServe 0.21.0 on the same models, one server at a time; each
# peer is installed once into .cache/peers/<name>. PEERS_SECONDS (5) of load per scenario,
# PEERS_ROUNDS (1) runs of everything with each cell's median reported, PEERS=kserve,mlserver.
.PHONY: bench-peers
bench-peers: setup
	$(PY) benchmarks/peers/compare.py
