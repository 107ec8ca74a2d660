# ternpe: `make demo` runs the main flow on the built-in MNIST sample, `make test` runs the
# tests. Both set up everything they need first (a .venv with the pinned stack, Debian packages).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ternpe-installed
JOBS   ?= 2

.PHONY: all setup demo sim test formal bench bitstreams resnet20 resnet20-ulx3s clean help

all: help

help:
	@echo "make demo    train the CNN on real 28x28 MNIST (the 5,000-digit sample built in; PE 1x16, WPC weighted"
	@echo "             by cycles), export it to exports/mnist, generate its Verilog; its page: runs/mnist/report.html"
	@echo "make demo DATASET=digits   the same on scikit-learn's 8x8 digits (15 s of training)"
	@echo "make demo BOARD=icebreaker   ... then co-simulate it and build the bitstream (icebreaker, upduino, ulx3s, orangecrab)"
	@echo "make bitstreams   build the demo's bitstreams for all four boards"
	@echo "make sim     co-simulate the demo's Verilog on Icarus and Verilator against the golden outputs"
	@echo "make resnet20   ResNet-20 on the CIFAR-shaped synthetic set: train (pruned), export, every layer on"
	@echo "             Verilator against the golden outputs, its ULX3S bitstream (100 MHz)"
	@echo "make resnet20-ulx3s   the same trained for the ULX3S (the array chosen for the board: --pe auto)"
	@echo "make test    run the test suite"
	@echo "make formal  the formal proofs (SymbiYosys): PE accumulator, output stream, host link, with the slow ones"
	@echo "make bench   print the method table (digits and MNIST, 3 seeds) and the hardware figures of the demo"
	@echo "make setup   create .venv and install everything (done by the targets above)"

setup: $(STAMP)
	@./tools/debian-packages.sh

# torch is pinned and installed first from the local CPU wheel: an unpinned torch pulls CUDA.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

BOARD ?=
DATASET ?= mnist
BOARDS := icebreaker upduino ulx3s orangecrab

# Training flags per data set: on the 8x8 digits every conv2 filter carries accuracy, so the quick
# demo prunes gently (lambda 0.3); MNIST takes the defaults (--cost cycles, lambda 1). See docs/demo.md.
TRAIN_FLAGS_digits := --lam 0.3
TRAIN_FLAGS ?= $(TRAIN_FLAGS_$(DATASET))

demo: setup
	$(BIN)/ternpe train --dataset $(DATASET) $(TRAIN_FLAGS) --out runs/$(DATASET)
	$(BIN)/ternpe export runs/$(DATASET) --out exports/$(DATASET)
	$(BIN)/ternpe generate exports/$(DATASET) --out build/$(DATASET)/rtl --device up5k
ifneq ($(BOARD),)
	$(BIN)/ternpe sim exports/$(DATASET) --simulator verilator --samples 8
	$(BIN)/ternpe build exports/$(DATASET) --board $(BOARD)
	$(BIN)/python tools/summary.py runs/$(DATASET) bitstreams/$(BOARD)/$(DATASET).report.json
endif
	$(BIN)/ternpe report runs/$(DATASET) --export exports/$(DATASET) \
		$(if $(BOARD),--build bitstreams/$(BOARD)/$(DATASET).report.json)

# bitstreams of the demo for every board (bitstreams/<board>/$(DATASET).{bin,bit} + report.json);
# each iCE40 bitstream is verified on VERIFY_SAMPLES golden inputs (about a minute each for MNIST)
VERIFY_SAMPLES ?= 2
bitstreams: setup
	@test -f exports/$(DATASET)/manifest.json || $(MAKE) demo DATASET=$(DATASET)
	@for b in $(BOARDS); do $(BIN)/ternpe build exports/$(DATASET) --board $$b --verify-samples $(VERIFY_SAMPLES) \
		|| exit 1; done

# ResNet-20 (option A shortcuts) on the CIFAR-shaped synthetic set (32x32x3; CIFAR-10 itself: see
# docs/demo.md), pruned to half the dense cycles or fewer; every layer co-simulated on Verilator; its
# ULX3S bitstream at the board's 100 MHz (bitstreams/ulx3s/resnet20.bit).
RESNET_FLAGS ?= --dataset synthetic-rgb32 --arch resnet20 --epochs-float 6 --epochs-ternary 8 --epochs-finetune 3 \
	--target-speedup 2 --lam-max 40
resnet20: setup
	$(BIN)/ternpe train $(RESNET_FLAGS) --out runs/resnet20
	$(BIN)/ternpe export runs/resnet20 --out exports/resnet20
	$(BIN)/ternpe sim exports/resnet20 --simulator verilator --samples 2
	$(BIN)/ternpe build exports/resnet20 --board ulx3s

# ResNet-20 trained for the ULX3S: the array is chosen for the board before training by the resource
# model (16x16), the penalty weighs each tile by its cycles there; built with the array and image
# lanes --pe auto fits (about 45 minutes of place and route on 2 cores; not in CI).
RESNET_ULX3S_FLAGS ?= --dataset synthetic-rgb32 --arch resnet20 --epochs-float 6 --epochs-ternary 8 \
	--epochs-finetune 3 --board ulx3s --target-speedup 3.5 --lam-max 100
resnet20-ulx3s: setup
	$(BIN)/ternpe train $(RESNET_ULX3S_FLAGS) --out runs/resnet20-ulx3s
	$(BIN)/ternpe export runs/resnet20-ulx3s --out exports/resnet20-ulx3s
	$(BIN)/ternpe sim exports/resnet20-ulx3s --board ulx3s --pe auto --simulator verilator --samples 2
	$(BIN)/ternpe build exports/resnet20-ulx3s --board ulx3s --pe auto

# co-simulate the demo's Verilog on Icarus and on Verilator against its golden outputs
sim: setup
	@test -f exports/$(DATASET)/manifest.json || $(MAKE) demo DATASET=$(DATASET)
	$(BIN)/ternpe sim exports/$(DATASET) --simulator icarus --samples 4
	$(BIN)/ternpe sim exports/$(DATASET) --simulator verilator --samples 16

test: setup
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup -q

# the formal proofs, with the slow ones (larger networks, minutes) that make test skips; one
# solver at a time. FORMAL=slow runs only those (CI: make test has run the others)
FORMAL ?= all
formal: setup
	TERNPE_FORMAL_ALL=1 $(BIN)/python -m pytest -q tests/test_formal.py $(if $(filter slow,$(FORMAL)),-m formal_slow)

bench: setup
	$(BIN)/python bench/methods.py
	@test -f exports/$(DATASET)/manifest.json || $(MAKE) demo DATASET=$(DATASET)
	$(BIN)/python bench/hardware.py exports/$(DATASET)
	$(BIN)/python bench/cosim.py exports/$(DATASET)
	$(MAKE) bitstreams
	$(BIN)/python bench/boards.py exports/$(DATASET)

clean:
	rm -rf runs exports build .pytest_cache
