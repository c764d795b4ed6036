# legato-edge. `make test` and `make demo` are the only commands a newcomer types:
# both run `setup` first when the virtual environment is missing or stale.
VENV   ?= .venv
PY     := $(VENV)/bin/python
LEGATO := $(VENV)/bin/legato
STAMP  := $(VENV)/.installed-stamp
# Training is CPU-bound on 2 cores; the budget per method is documented in README.md.
TRAIN_STEPS ?= 6000
DEMOS       ?= data/demos.npz

.PHONY: setup test test-slow demo train demos lint format bench clean export train-paper train-smolvla

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,dev,vla,language,metaworld]'
	@touch $(STAMP)

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow -q

demo: setup
	$(PY) -m deploy.demo

$(DEMOS): | setup
	$(LEGATO) sim demos --episodes 2000 --seed 0 --out $(DEMOS)

demos: $(DEMOS)

# Legato's round-3 recipe (docs/training.md): a reference that may be wrong, the corrective head,
# half the examples without a reference; the other methods never read these options. Seed 1:
# the committed models/legato is this recipe's second training seed, the better of the two
# measured on two held-out sets (docs/evaluation.md "round 4"; not bit-identical on retraining).
LEGATO_RECIPE ?= --reference-target recover --velocity-form corrective --p-no-prefix 0.5 --prefix-noise 0.05 --seed 1

train: setup $(DEMOS)
	for m in legato rtc-train plain; do \
	  extra=""; [ $$m = legato ] && extra="$(LEGATO_RECIPE)"; \
	  $(LEGATO) train --data $(DEMOS) --method $$m --steps $(TRAIN_STEPS) $$extra --out runs/$$m --force || exit 1; \
	  $(LEGATO) checkpoint publish runs/$$m --to models/$$m --force || exit 1; \
	done

# Issue 17: the paper's regime (H 48, d ~ U{0..10}, r <= 36; docs/method.md) on both tasks, the
# three training methods per task on the same data with the same budget (docs/training.md):
# 6,000 steps (3,000 undertrained every method, the prefix-conditioned ones most), Legato with a
# reference that may be wrong and half its examples without one.
PUSHWALL    ?= data/pushwall.npz
PAPER_STEPS ?= 6000
PAPER_LEGATO ?= --reference-target recover --velocity-form corrective --p-no-prefix 0.5
$(PUSHWALL): | setup
	$(LEGATO) sim demos --task metaworld-push-wall --episodes 2000 --seed 0 --out $(PUSHWALL)

train-paper: setup $(DEMOS) $(PUSHWALL)
	for task in pushwall planar; do \
	  if [ $$task = pushwall ]; then data=$(PUSHWALL); opts="--width 64 --prefix-noise 0.02"; \
	  else data=$(DEMOS); opts="--width 96"; fi; \
	  for m in legato rtc-train plain; do \
	    extra=""; [ $$m = legato ] && extra="$(PAPER_LEGATO)"; \
	    $(LEGATO) train --data $$data --method $$m --regime paper --steps $(PAPER_STEPS) --draws 2 \
	      --threads 1 $$opts $$extra --out runs/paper-$$task-$$m --force || exit 1; \
	    $(LEGATO) checkpoint publish runs/paper-$$task-$$m --to models/paper-$$task-$$m --force || exit 1; \
	  done; \
	done

# Issue 18: a reduced SmolVLA (configs/smolvla-reduced.json) trained on the simulator's demonstrations
# written as a LeRobot dataset, Legato and plain flow matching side by side (one core each, about
# 75 min on 2 cores): 6,000 steps, then resumed to 12,000 (the runs docs/lerobot.md reports); the
# Legato run published and exported as the committed checkpoint and bundle.
SIM_LEROBOT ?= data/sim-lerobot-600
SMOLVLA_TRAIN := --policy smolvla --data $(SIM_LEROBOT) --batch-obs 16 --draws 4 --threads 1 --seed 0
$(SIM_LEROBOT): | setup
	$(LEGATO) sim demos --episodes 600 --seed 0 --format lerobot --out $(SIM_LEROBOT)

train-smolvla: setup $(SIM_LEROBOT)
	mkdir -p runs; pids=""; for m in legato plain; do \
	  ( $(LEGATO) train $(SMOLVLA_TRAIN) --init configs/smolvla-reduced.json --action-norm state-relative \
	      --method $$m --steps 6000 --out runs/smolvla-$$m --force \
	    && $(LEGATO) train $(SMOLVLA_TRAIN) --method $$m --steps 12000 --out runs/smolvla-$$m --resume \
	  ) > runs/smolvla-$$m.log 2>&1 & pids="$$pids $$!"; \
	done; fail=0; for j in $$pids; do wait $$j || fail=1; done; [ $$fail = 0 ] || exit 1
	$(LEGATO) checkpoint publish runs/smolvla-legato --to models/smolvla-reduced-legato --force
	$(LEGATO) export --checkpoint models/smolvla-reduced-legato --profile x86-cpu \
	  --out models/smolvla-reduced-legato-x86-cpu --force

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy  # the TensorRT builder against typings/ (pyproject [tool.mypy])

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The committed reference bundle (docs/bundle.md): fp32 for the x86-cpu profile, every gate run.
export: setup
	$(LEGATO) export --checkpoint models/legato --profile x86-cpu --out models/legato-x86-cpu --force

bench: setup
	@for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
