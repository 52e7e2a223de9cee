# Two entry points: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean gpu-check gpu-bundle

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/loupe demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

bench: $(STAMP)
	$(BIN)/python bench/speed.py

# The prepared GPU check (bench/gpu_check.sh): with CUDA it installs what the machine lacks from
# $(GPU_BUNDLE)/wheels and reads $(GPU_BUNDLE)/assets; without CUDA it says so and exits 0.
gpu-check:
	PYTHON=$(PYTHON) bash bench/gpu_check.sh

# What the GPU machine (Python 3.12, x86_64, no network) needs and lacks: the peers' wheels
# and the few assets the check reads (about 25 MB; the tree that travels must stay < 64 MiB).
GPU_BUNDLE := .gpu-bundle
GPU_ASSETS ?= ../shared/assets
GPU_WHEELS := captum==0.9.0 torchcam==0.5.0 pycocotools==2.0.11 ttach==0.0.3
GPU_PIP := --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	--platform manylinux2014_x86_64

gpu-bundle:
	test -d $(GPU_ASSETS)/coco128-seg || { echo "GPU_ASSETS=$(GPU_ASSETS): no assets" >&2; exit 1; }
	if [ -d $(GPU_BUNDLE) ]; then chmod -R u+w $(GPU_BUNDLE) && rm -rf $(GPU_BUNDLE); fi
	mkdir -p $(GPU_BUNDLE)/wheels $(GPU_BUNDLE)/assets/weights $(GPU_BUNDLE)/assets/photos
	$(PYTHON) -m pip download --quiet $(GPU_PIP) -d $(GPU_BUNDLE)/wheels $(GPU_WHEELS)
	$(PYTHON) -m pip wheel --quiet --no-deps -w $(GPU_BUNDLE)/wheels grad-cam==1.5.7
	cp $(GPU_ASSETS)/README.md $(GPU_BUNDLE)/assets/
	cd $(GPU_ASSETS)/weights && cp mobilenet_v2_imagenet1k_coral.pth tf_same_padding.py \
		LICENSE.coral-test-data $(CURDIR)/$(GPU_BUNDLE)/assets/weights/
	cd $(GPU_ASSETS)/photos && cp cat_and_dog.png parrot.jpg owl.jpg LICENSE.cat_and_dog.png \
		COPYRIGHT.coral-test-data $(CURDIR)/$(GPU_BUNDLE)/assets/photos/
	cp -R $(GPU_ASSETS)/coco128-seg $(GPU_BUNDLE)/assets/
	chmod -R u+w $(GPU_BUNDLE)
	du -sh $(GPU_BUNDLE)

clean:
	rm -rf $(VENV) runs build *.egg-info
