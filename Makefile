# merc-toolkit: one pipeline from raw corpora to trained MERC / MSA methods.
#   make demo    - the whole chain on the generated demo corpus (data, features, TelME, metrics)
#   make test    - the test suite
# Both install what they need first (make install). Variables can be set on the command line:
#   make features CORPUS=meld ROOT=/data/MELD.Raw PROFILE=paper [ENCODERS="roberta opensmile"] [INPUTS="data2vec timesformer"]
#   make train METHOD=telme CORPUS=demo-meld SEEDS="0 1 2" SET="stages.fusion.lr=1e-4"
#   make predict RUN=runs/demo-telme INPUT=clip.mp4 TEXT="transcript" [ARGS="--explain --json p.json"]
#   make compare CORPUS=demo-meld SEEDS="0 1 2" [EPOCHS=1] [SET="train.eval_batch_size=8"]
#   make export RUN=runs/demo-telme OUT=runs/demo-telme-export   (a shareable model folder, HF layout)
#   make finetune ENCODER=roberta-context CORPUS=meld ROOT=/data/MELD.Raw PROFILE=paper [SET="stages.finetune.lr=1e-5"]
#   paths: CACHE=cache RUNS=runs DEMO_DATA=data/demo (a demo corpus is read from DEMO_DATA/<layout>)
#   benchmarks (tables): make bench-features | bench-train | bench-finetune | bench-scale [ARGS="--axes count"] | faults

SHELL := /bin/bash
PYTHON ?= python3
CACHE_HOME ?= $(HOME)/.cache/merc
# torchaudio's newest releases pin an older torch in their metadata; 2.11.0 installed with --no-deps
# imports beside torch 2.14.1 and its functional.resample works (checked). So it is not in pyproject's
# dependencies (pip would then replace torch with the older multi-GB build) but installed here.
TORCHAUDIO := torchaudio==2.11.0
# facenet-pytorch (MTCNN face detector for the video encoders' face policies; its wheel ships the
# detector weights) pins torch<2.3 / numpy<2 / Pillow<10.3 in its metadata; 2.6.0 installed with --no-deps
# imports and detects beside torch 2.14.1 (tests/test_faces.py). Its one real extra need, requests,
# is pinned in pyproject.
FACENET := facenet-pytorch==2.6.0
# The venv (~6.5 GB) is keyed by a hash of the pinned dependencies, so CI and every checkout on the
# same machine reuse it; VENV=... overrides.
PINS_HASH := $(shell $(PYTHON) -c "import tomllib,hashlib;p=tomllib.load(open('pyproject.toml','rb'))['project'];print(hashlib.sha1(repr((p['dependencies'],p['optional-dependencies'],'$(TORCHAUDIO) $(FACENET)')).encode()).hexdigest()[:12])")
VENV ?= $(CACHE_HOME)/venv-$(PINS_HASH)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

CORPUS ?=
ROOT ?=
PROFILE ?= offline
CACHE ?= cache
ENCODERS ?=
METHOD ?= telme
ENCODER ?= roberta-context
CONFIG ?=
SEEDS ?=
SET ?=
RUNS ?= runs
RUN ?=
INPUT ?=
TEXT ?=
ARGS ?=
EPOCHS ?=
OUT ?=
DEMO_DATA ?= data/demo
FINETUNED ?=
INPUTS ?=

ROOT_ARG := $(if $(ROOT),--root $(ROOT),)
CONFIG_ARG := $(if $(CONFIG),--config $(CONFIG),)
SET_ARGS := $(foreach s,$(SET),--set $(s))

.PHONY: install demo demo-data features train finetune evaluate predict export compare test bench-features bench-train \
	bench-finetune bench-scale clean help

help:
	@sed -n '1,12p' Makefile

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import tomllib;p=tomllib.load(open('pyproject.toml','rb'))['project'];print('\n'.join(p['dependencies']+p['optional-dependencies']['test']))" > $(VENV)/requirements.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check -r $(VENV)/requirements.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps $(TORCHAUDIO) $(FACENET)
	touch $(STAMP)

# Idempotent: the dependencies once per pin set, then a cheap editable install of this checkout
# only when the venv points at another one.
install: $(STAMP)
	@if [ "$$(cat $(VENV)/.project-dir 2>/dev/null)" != "$(CURDIR)" ]; then \
		$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . && \
		echo "$(CURDIR)" > $(VENV)/.project-dir; fi

demo-data: install
	$(PY) -m pipeline demo-data --out $(DEMO_DATA)

# CORPUS defaults to demo-meld for features; for train to the method's default_corpus
# (configs/<method>/base.yaml). Demo corpora and their caches are made on first use; a demo corpus
# without ROOT is read from $(DEMO_DATA)/<layout> (demo-meld -> $(DEMO_DATA)/meld), where demo-data writes it.
features: install
	@corpus="$(or $(CORPUS),demo-meld)"; root="$(ROOT)"; \
	if [[ "$$corpus" == demo-* && -z "$$root" ]]; then root="$(DEMO_DATA)/$${corpus#demo-}"; \
		if [[ ! -d "$$root" ]]; then $(MAKE) --no-print-directory demo-data || exit 1; fi; fi; \
	$(PY) -m pipeline features --corpus $$corpus $${root:+--root "$$root"} --profile $(PROFILE) --cache-root $(CACHE) \
		$(if $(ENCODERS),--encoders $(ENCODERS),) $(if $(FINETUNED),--finetuned $(FINETUNED),) \
		$(if $(INPUTS),--inputs $(INPUTS),)

train: install
	@corpus="$(CORPUS)"; \
	[[ -n "$$corpus" ]] || corpus=$$($(PY) -c "from pipeline.config import load_config; \
		print(load_config('$(METHOD)').get('default_corpus') or '')") || exit 1; \
	if [[ ! -f "$(CACHE)/$$corpus/meta.json" ]]; then $(MAKE) --no-print-directory features CORPUS=$$corpus || exit 1; fi; \
	$(PY) -m pipeline train --method $(METHOD) --corpus $$corpus $(CONFIG_ARG) --cache-root $(CACHE) \
		$(if $(SEEDS),--seeds $(SEEDS),) --out $(RUNS) $(SET_ARGS)

# Fine-tune a text encoder on a corpus (configs/finetune/<encoder>/); then cache it with
# `make features CORPUS=... FINETUNED=runs/<ft run>` (column <modality>.<encoder>@ft).
finetune: install
	@corpus="$(or $(CORPUS),demo-meld)"; root="$(ROOT)"; \
	if [[ "$$corpus" == demo-* && -z "$$root" ]]; then root="$(DEMO_DATA)/$${corpus#demo-}"; \
		if [[ ! -d "$$root" ]]; then $(MAKE) --no-print-directory demo-data || exit 1; fi; fi; \
	$(PY) -m pipeline finetune --encoder $(ENCODER) --corpus $$corpus $${root:+--root "$$root"} --profile $(PROFILE) \
		$(CONFIG_ARG) $(if $(SEEDS),--seeds $(SEEDS),) --out $(RUNS) $(SET_ARGS)

evaluate: install
	@test -n "$(RUN)" || { echo "usage: make evaluate RUN=runs/<run dir>"; exit 2; }
	$(PY) -m pipeline evaluate $(RUN)

# Emotions of a new clip (transcript from TEXT or a sidecar .txt) or dialogue (folder with clips + CSV).
predict: install
	@test -n "$(RUN)" -a -n "$(INPUT)" || { echo 'usage: make predict RUN=runs/<run dir> INPUT="clip.mp4|dialogue_dir" [TEXT="..."]'; exit 2; }
	$(PY) -m pipeline predict $(RUN) $(INPUT) $(if $(TEXT),--text "$(TEXT)",) $(ARGS)

# A run as a self-contained folder in the Hugging Face model-repo layout (model card, safetensors, no code);
# predict takes it as it takes the run dir.
export: install
	@test -n "$(RUN)" -a -n "$(OUT)" || { echo "usage: make export RUN=runs/<run dir> OUT=<new folder>"; exit 2; }
	$(PY) -m pipeline export $(RUN) $(OUT)

# Every method that fits the corpus' cache, SEEDS (default 0 1 2) each, in one table. The cache is built
# on first use, as for train.
compare: install
	@corpus="$(or $(CORPUS),demo-meld)"; \
	if [[ ! -f "$(CACHE)/$$corpus/meta.json" ]]; then $(MAKE) --no-print-directory features CORPUS=$$corpus || exit 1; fi; \
	$(PY) -m pipeline compare --corpus $$corpus --cache-root $(CACHE) --seeds $(or $(SEEDS),0 1 2) \
		$(if $(EPOCHS),--epochs $(EPOCHS),) $(foreach s,$(SET),--set-all $(s)) \
		--out $(or $(OUT),$(RUNS)/compare-$$corpus-$$(date +%Y%m%d-%H%M%S))

# The README's main command: demo corpus -> offline features -> TelME -> metrics, and where the
# fused model gets its answers (per-head accuracy by the modality that carries each cue).
demo: install
	$(MAKE) --no-print-directory features CORPUS=demo-meld
	rm -rf $(RUNS)/demo-telme
	$(PY) -m pipeline train --method telme --corpus demo-meld --cache-root $(CACHE) --out $(RUNS) --name demo-telme
	$(PY) -m pipeline analyse $(RUNS)/demo-telme --cues $(DEMO_DATA)/meld/demo_cues.csv

test: install
	$(PY) -m pytest -q --durations=15

bench-features: install
	$(PY) bench/bench_features.py

bench-train: install
	$(PY) bench/bench_train.py

bench-finetune: install
	$(PY) bench/bench_finetune.py $(ARGS)

# Realistic scale (issue 16): 13,708 MELD-like rows (count axis), 200 1280x720 clips (decode, pipeline), the
# paper-size encoders with random weights; ARGS="--axes count --rows 3000" etc. Clips go to ~/.cache/merc/bench-scale.
bench-scale: install
	$(PY) bench/bench_scale.py $(ARGS)

# Fault injection (bench/faults.py): SIGKILL features / train at random points and during the final
# save, restart / resume, race two runs; prints a table. ARGS="--kills 8 --train-kills 3 --seed 1".
.PHONY: faults cache-prune
faults: install
	$(PY) bench/faults.py $(ARGS)

# Delete what a cache no longer uses (old fingerprints, dropped columns, old versions), listing each.
cache-prune: install
	$(PY) -m pipeline features --prune --corpus $(or $(CORPUS),demo-meld) --cache-root $(CACHE)

clean:
	rm -rf $(CACHE) $(RUNS) $(DEMO_DATA)
