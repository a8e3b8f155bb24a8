# The README's commands. `make demo` = set up + main job; `make test` = set up + tests.
PY ?= python3
TORCH ?= torch==2.13.0

.PHONY: setup fmnist demo test lint check bench

setup:
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,bench]'

# Fashion-MNIST from Debian (needs root / sudo); the data code also downloads it when online.
fmnist:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
	  { (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
	    echo "could not install dataset-fashion-mnist; resnetlab will try to download it"; }

demo: setup fmnist
	$(PY) -m resnetlab train --model resnet20 --data fashion-mnist --recipe fast --epochs 5 \
	  --out runs/demo-resnet20-fmnist-$$(date +%Y%m%d-%H%M%S)

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: setup lint
	$(PY) -m pytest

check: lint
	$(PY) -m pytest
