# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The TF Serving release of Dockerfile.serving, named once; its TensorFlow has the same version number.
TF_SERVING_VERSION := $(shell cat genserve/deploy/TF_SERVING_VERSION)
SERVING_VENV := .venv-serving
# benchmarks/peers.py's peer: KServe's Python model server (the version the deploy manifests are checked
# against, genserve/deploy/kserve.py) beside genserve's TensorFlow (they co-install).
PEERS_VENV := .venv-peers
MODELS_DIR ?= models

.PHONY: demo test install clean bench check-serving check-installs docker-build browser test-data peers peers-quick

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Two pytest-xdist workers: the suite waits on servers and subprocesses as much as it computes (measured
# on 2 cores: 10 min 06 s serial, 5 min 36 s with -n 2). Tests marked `serial` (Ray's start-up, which
# waits a fixed 30 s for its own processes) run alone afterwards. A single file: `$(PY) -m pytest tests/test_x.py`.
test: $(STAMP) browser test-data
	$(PY) -m pytest -q -n 2 -m "not slow and not serial"
	$(PY) -m pytest -q -m "serial and not slow"

# Registry files the tests read, fetched once into the cache (~/.cache/genserve) so no test downloads:
# the KServe SDK wheel whose types validate the KServe manifests.
test-data: $(STAMP)
	$(PY) -c "from genserve.data import PinnedWheel, fetch_wheel; from genserve.deploy.kserve import SCHEMA_WHEEL; fetch_wheel(PinnedWheel(*SCHEMA_WHEEL))"

# Debian's chromium for the playground's browser test (driven by playwright with executable_path; never
# `playwright install`). Non-interactive; nothing to do when it is already installed.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; else \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; fi

demo: $(STAMP)
	bash scripts/demo.sh

bench: $(STAMP)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

# Every family's export, run on the TensorFlow of the pinned TF Serving image (a side venv with
# tensorflow-cpu of that version and nothing of genserve), by SignatureDef tensor names in a graph Session.
check-serving: $(STAMP)
	test -x $(SERVING_VENV)/bin/python || $(PYTHON) -m venv $(SERVING_VENV)
	$(SERVING_VENV)/bin/python -m pip install --quiet 'tensorflow-cpu==$(TF_SERVING_VERSION)'
	rm -rf build/check-serving
	$(PY) scripts/check_serving.py prepare build/check-serving
	cd build && ../$(SERVING_VENV)/bin/python ../scripts/check_serving.py verify check-serving

# The README's installs in throwaway venvs (base: `pip install .`, and `pip install '.[client]'`): --help,
# a client command against a real server from .venv, the one-line refusal naming the missing extra.
check-installs: $(STAMP)
	PY=$(PY) PYTHON=$(PYTHON) bash scripts/check_installs.sh

# genserve vs KServe on the same VAE SavedModel (benchmarks/peers.py); a side venv with kserve and the
# same TensorFlow distribution as genserve's (tensorflow-cpu imports ~65 MB smaller: RSS would compare
# wheels, not servers) and nothing of genserve runs the KServe server. peers-quick (~1 s a row) is CI's form.
$(PEERS_VENV)/.installed:
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet \
		'kserve==$(shell $(PY) -c "from genserve.deploy.kserve import SCHEMA_WHEEL; print(SCHEMA_WHEEL[1])")' \
		'tensorflow==$(shell $(PY) -c "from importlib.metadata import version; print(version('tensorflow'))")'
	touch $@

peers: $(STAMP) $(PEERS_VENV)/.installed
	$(PY) benchmarks/peers.py --kserve-python $(PEERS_VENV)/bin/python --rest-workers 2

peers-quick: $(STAMP) $(PEERS_VENV)/.installed
	$(PY) benchmarks/peers.py --kserve-python $(PEERS_VENV)/bin/python --quick --rest-workers 2

docker-build:
	docker build -f Dockerfile.serving --build-arg TF_SERVING_VERSION=$(TF_SERVING_VERSION) \
		--build-arg MODELS_DIR=$(MODELS_DIR) -t genserve-serving .

clean:
	rm -rf $(VENV) $(SERVING_VENV) $(PEERS_VENV) out build *.egg-info
