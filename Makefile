# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The TF Serving release of Dockerfile.serving, named once; its TensorFlow has the same version number.
TF_SERVING_VERSION := $(shell cat genserve/deploy/TF_SERVING_VERSION)
SERVING_VENV := .venv-serving
MODELS_DIR ?= models

.PHONY: demo test install clean bench check-serving docker-build browser test-data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP) browser test-data
	$(PY) -m pytest -q

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

docker-build:
	docker build -f Dockerfile.serving --build-arg TF_SERVING_VERSION=$(TF_SERVING_VERSION) \
		--build-arg MODELS_DIR=$(MODELS_DIR) -t genserve-serving .

clean:
	rm -rf $(VENV) $(SERVING_VENV) out build *.egg-info
