# etch: `make demo` and `make test` are the whole set-up on a fresh machine.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
APT_STAMP := $(VENV)/.apt

.PHONY: demo test test-all test-avx2 bench lint models clean venv system-deps

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[models,test]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages for the edge target (aarch64 cross compiler, qemu-user). Best effort:
# where apt cannot run (not root, no network) the edge tests skip and say why.
$(APT_STAMP): | $(STAMP)
	-@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null) \
	      || echo "note: could not install the aarch64 toolchain; edge tests will skip"; \
	  fi; fi
	-@$(VPY) -m backends.tvm.edge_rpc fetch >/dev/null 2>&1 \
	  || echo "note: no aarch64 TVM runtime (PyPI wheel); the edge RPC test will skip"
	touch $(APT_STAMP)

system-deps: $(APT_STAMP)

models: $(STAMP)
	$(VENV)/bin/etch models build

demo: $(STAMP) $(APT_STAMP)
	$(VENV)/bin/etch demo

# pytest-xdist workers: one per CPU, at most 8 (each takes up to ~1.3 GB). Most tests are
# one thread (a TVM build, a simulation), so 2 workers on 2 cores halve the time (12:39 ->
# 6:45 on the 2-vCPU Zen 4 VM). A test module runs whole in one worker (its fixtures are
# built once); the shared caches (models, Verilator builds) are written atomically under a
# lock. TEST_JOBS=0 runs in this process.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 8 ] && n=8; echo $$n)
PYTEST  := $(VPY) -m pytest -n $(TEST_JOBS) --dist loadscope

test: $(STAMP) $(APT_STAMP)
	$(PYTEST)

test-all: $(STAMP) $(APT_STAMP)
	$(PYTEST) -m ''

# The host-dependent tests as an AVX2-only CPU runs them: pytest under qemu-x86_64 -cpu
# $(ISA_CPU) (EPYC-Milan: AMD Zen 3; or Haswell). Needs qemu-user 7.2+; see README.
ISA_CPU ?= EPYC-Milan
test-avx2: $(STAMP) $(APT_STAMP)
	$(VPY) -m tests.isa_emulation --cpu $(ISA_CPU)

bench: $(STAMP) $(APT_STAMP)
	$(VENV)/bin/etch bench

lint: $(STAMP)
	$(VENV)/bin/ruff check compiler passes backends runtime models benchmarks tests

clean:
	rm -rf .cache build *.egg-info
