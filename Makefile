# legato-edge. `make test` and `make demo` are the only commands a newcomer types:
# both run `setup` first when the virtual environment is missing or stale.
VENV   ?= .venv
PY     := $(VENV)/bin/python
LEGATO := $(VENV)/bin/legato
STAMP  := $(VENV)/.installed-stamp
# Training is CPU-bound on 2 cores; the budget per method is documented in README.md.
TRAIN_STEPS ?= 6000
DEMOS       ?= data/demos.npz

.PHONY: setup test test-slow demo train demos lint format bench clean export

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,dev,vla,language]'
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

train: setup $(DEMOS)
	for m in legato rtc-train plain; do \
	  $(LEGATO) train --data $(DEMOS) --method $$m --steps $(TRAIN_STEPS) --out runs/$$m --force || exit 1; \
	  $(LEGATO) checkpoint publish runs/$$m --to models/$$m --force || exit 1; \
	done

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
