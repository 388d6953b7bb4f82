# Ottava — the two set-up commands for a fresh machine are `make run` and `make test`.
# Every target installs what it needs itself (a virtual environment under the clone).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

ARGS ?=

.PHONY: help venv run wasm-examples test pytest lint fmt proto crds docs golden check-generated bench bench-peers fuzz soak image cluster-up cluster-down e2e-up e2e-down clean

help:
	@echo "make run           start the sidecar standalone on in-memory components (ARGS='--app-id x …')"
	@echo "make test          install what the tests need and run them all (what CI runs)"
	@echo "make lint          ruff + mypy --strict"
	@echo "make fmt           ruff format + autofix"
	@echo "make proto         regenerate the Python code for proto/"
	@echo "make crds          regenerate crds/ from the resource models"
	@echo "make docs          regenerate the metadata tables in docs/ from the component settings models"
	@echo "make golden        rewrite the injector golden files (review the diff)"
	@echo "make wasm-examples build examples/wasm/counter/counter.wasm with Go (GOOS=wasip1 GOARCH=wasm; docs/wasm.md)"
	@echo "make bench         GetState vs a bare grpc.aio server, pub/sub, invocation, WASM functions, Redis, tracing's cost, 1 GiB of files, resiliency (docs/benchmarks.md)"
	@echo "make bench-peers   Ottava, daprd 1.18.2 (built once, cached) and the bare floor side by side, ~10 min (ARGS='--quick')"
	@echo "make fuzz          the property suite (tests/properties) for FUZZ_MINUTES (25) with fresh seeds (docs/robustness.md)"
	@echo "make soak          abusive clients against a sidecar for 4 minutes, watching its memory (docs/robustness.md)"
	@echo "make image         build the image ottava/ottava:<version> into dist/ottava-<version>.image.tar (root; no Docker; image/README.md)"
	@echo "make cluster-up    build (once) and start a local one-node Kubernetes cluster (e2e/)"
	@echo "make cluster-down  stop it and remove its state"
	@echo "make e2e-up        cluster-up, then build and import the images and helm install Ottava (in the cluster)"
	@echo "make e2e-down      stop the cluster and remove every trace of it"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@echo "==> creating the virtual environment in $(VENV) and installing ottava[dev]"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: venv
	$(VENV)/bin/ottava run $(ARGS)

proto: venv
	$(PY) tools/gen_proto.py

golden: venv
	$(PY) tools/gen_golden.py

crds: venv
	$(PY) tools/gen_crds.py

docs: venv
	$(PY) tools/gen_docs.py

check-generated: venv
	@echo "==> checking that generated code, CRDs and docs tables are up to date"
	$(PY) tools/gen_proto.py --check
	$(PY) tools/gen_crds.py --check
	$(PY) tools/gen_docs.py --check

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

fmt: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: venv check-generated lint pytest

pytest: venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The Go function of examples/wasm/counter, with the standard toolchain (Go's build cache makes a rebuild quick).
wasm-examples:
	cd examples/wasm/counter && GOTOOLCHAIN=local GOOS=wasip1 GOARCH=wasm go build -trimpath -o counter.wasm .

bench: venv
	$(PY) bench/getstate.py $(ARGS)
	$(PY) -m bench.pubsub
	$(PY) -m bench.invoke
	$(PY) -m bench.wasm
	$(PY) -m bench.state_redis
	$(PY) -m bench.tracing
	$(PY) -m bench.files
	$(PY) -m bench.resiliency

# Not part of `make test`: builds daprd once (about 3 minutes, cached under ~/.cache/ottava),
# then measures Ottava, daprd and a bare grpc.aio server in one run (bench/peers/run.py).
bench-peers: venv
	@built=$$(bench/peers/build-daprd.sh) && $(PY) -m bench.peers.run --daprd "$$(echo "$$built" | tail -n1)" $(ARGS)

# The property suite's long profile, round after round, until FUZZ_MINUTES are spent (docs/robustness.md).
FUZZ_MINUTES ?= 25
fuzz: venv
	$(PY) -m tests.properties --minutes $(FUZZ_MINUTES) $(ARGS)

# Not part of `make test`: 5 minutes, and it judges memory, which other load disturbs.
soak: venv
	$(PY) -m bench.soak $(ARGS)

# The archive loads with `docker load -i` or `ctr -n k8s.io images import` (image/README.md).
image:
	@image/build.sh ottava

cluster-up:
	$(MAKE) -C e2e up

cluster-down:
	$(MAKE) -C e2e down

# A cluster with Ottava installed by Helm and the operator running (as its chart's
# ServiceAccount), for people to try: see docs/kubernetes.md.
e2e-up: venv
	OTTAVA_E2E_KEEP=1 $(PY) -m tests.e2e.incluster up

e2e-down: venv
	$(PY) -m tests.e2e.incluster down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
