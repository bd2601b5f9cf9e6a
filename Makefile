# Two commands: `make serve` and `make test` set everything up themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: all install test lint serve bench clean

all: test

# torch first and pinned: an unpinned `torch` would pull a multi-GB CUDA build here.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) models
	$(BIN)/ruff check .
	$(BIN)/pytest -q

serve: $(STAMP) models
	$(BIN)/noodlebox serve

# The default checkpoint (the demo model, nodes/default_model.py) when models/checkpoints is empty.
.PHONY: models
models: $(STAMP)
	$(BIN)/python -m nodes.default_model
	$(MAKE) --no-print-directory tiny-transformer-models

# The T5 tokenizer's vocabulary (SD3, Flux): data files of the diffsynth 1.1.8 wheel (Apache-2.0),
# installed without its dependencies (they would pull torchvision) and never imported.
T5_STAMP := $(VENV)/.t5-vocab
$(T5_STAMP): $(STAMP)
	$(BIN)/pip install -q --no-deps diffsynth==1.1.8
	touch $(T5_STAMP)
models: $(T5_STAMP)

# Tiny random SD3.5 and Flux schnell checkpoints for workflows/sd35.json and workflows/flux_schnell.json,
# made after the demo model so that an empty checkpoint folder still gets the demo first.
TINY_TRANSFORMERS := models/checkpoints/noodlebox-tiny-sd35.safetensors \
	models/checkpoints/noodlebox-tiny-flux-schnell.safetensors
.PHONY: tiny-transformer-models
tiny-transformer-models: $(TINY_TRANSFORMERS)
models/checkpoints/noodlebox-tiny-%.safetensors: | $(STAMP)
	$(BIN)/noodlebox make-checkpoint --arch $* $@

# A ControlNet and a T2I-Adapter made for the demo checkpoint (workflows/controlnet.json).
CONTROL_BASE := models/demo/noodlebox-demo-shapes.safetensors
CONTROL_DIR := models/controlnet
CONTROL_DEMO := $(CONTROL_DIR)/noodlebox-demo-controlnet.safetensors $(CONTROL_DIR)/noodlebox-demo-t2i-adapter.safetensors
$(CONTROL_DIR)/noodlebox-demo-controlnet.safetensors: $(CONTROL_BASE) | $(STAMP)
	$(BIN)/noodlebox make-model --kind controlnet --base $(CONTROL_BASE) --seed 1 $@
$(CONTROL_DIR)/noodlebox-demo-t2i-adapter.safetensors: $(CONTROL_BASE) | $(STAMP)
	$(BIN)/noodlebox make-model --kind t2i-adapter --base $(CONTROL_BASE) --seed 2 $@
models: $(CONTROL_DEMO)

# A random 9-channel SD1.5 inpainting checkpoint (workflows/inpaint_model.json); the demo model is
# placed first, since the default-model step leaves a folder that already has a checkpoint alone.
INPAINT_CKPT := models/checkpoints/noodlebox-random-sd15-inpaint.safetensors
$(INPAINT_CKPT): | $(STAMP)
	$(BIN)/python -m nodes.default_model
	$(BIN)/noodlebox make-checkpoint --arch sd15-inpaint --size tiny --seed 3 $@
models: $(INPAINT_CKPT)

# A random SD2.1 unCLIP checkpoint with its CLIP image encoder (workflows/unclip.json), the demo model first.
UNCLIP_CKPT := models/checkpoints/noodlebox-random-sd21-unclip.safetensors
$(UNCLIP_CKPT): | $(STAMP)
	$(BIN)/python -m nodes.default_model
	$(BIN)/noodlebox make-checkpoint --arch sd2-unclip --size tiny --seed 4 $@
models: $(UNCLIP_CKPT)

# A seeded random 4x ESRGAN upscaler in the original key layout (workflows/upscale_esrgan.json).
UPSCALE_DIR := models/upscale_models
$(UPSCALE_DIR)/noodlebox-test-esrgan.pth: | $(STAMP)
	$(BIN)/noodlebox make-model --kind upscale --arch esrgan --seed 0 $@
models: $(UPSCALE_DIR)/noodlebox-test-esrgan.pth

# Two LoRAs made for the demo checkpoint, one kohya LoRA and one LoCon (workflows/lora.json).
LORA_BASE := models/demo/noodlebox-demo-shapes.safetensors
LORA_DIR := models/loras
LORA_DEMO := $(LORA_DIR)/noodlebox-test-lora.safetensors $(LORA_DIR)/noodlebox-test-locon.safetensors
$(LORA_DIR)/noodlebox-test-lora.safetensors: $(LORA_BASE) | $(STAMP)
	$(BIN)/noodlebox make-model --kind lora --base $(LORA_BASE) --rank 4 --seed 1 $@
$(LORA_DIR)/noodlebox-test-locon.safetensors: $(LORA_BASE) | $(STAMP)
	$(BIN)/noodlebox make-model --kind locon --base $(LORA_BASE) --rank 4 --seed 2 $@
models: $(LORA_DEMO)

bench: $(STAMP)
	$(BIN)/python bench/executor.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# --- web editor (web/) and browser tests -------------------------------------
# The editor's npm packages come from the committed lock file; the browser tests drive
# Debian's chromium (installed here when missing; never a downloaded browser).
WEB_STAMP := web/node_modules/.installed
.PHONY: web-deps test-comfyui-frontend

$(WEB_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $(WEB_STAMP)

web-deps: $(WEB_STAMP)
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || \
		(apt-get update -qq && apt-get install -y -qq chromium) || \
		echo "chromium could not be installed: the browser tests will skip"

test: web-deps
serve: $(WEB_STAMP)

# The official ComfyUI frontend (GPL-3.0, an optional extra) against our server.
test-comfyui-frontend: $(STAMP) web-deps
	$(BIN)/pip install -q -e '.[dev,comfyui-frontend]'
	$(BIN)/pytest -q tests/web/test_comfyui_frontend.py
